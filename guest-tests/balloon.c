/* virtio-balloon driven from the host (virtio 1.2, 5.5). The kernel touches a region of its
 * memory, then follows the host's target (num_pages) by inflating and deflating with the
 * PFNs of those pages, keeps a statistics buffer with the device, and reports another
 * region as free. The host script (tests/t-balloon.sh) measures the VMM's RSS between the
 * steps; the kernel prints a line at each step and waits for console commands where the
 * host needs to look before it goes on:
 *
 *   TOUCHED pages=N ms=T, READY-INFLATE        the region is touched; set a target now
 *   TARGET num_pages=N actual=M                every change of the target the driver sees
 *   INFLATED pages=N actual=M ms=T             pages given to the device, actual updated
 *   DEFLATED pages=N actual=M ms=T             pages taken back (and checked at actual 0)
 *   STATS-SENT n minor_faults=n total=B        a statistics buffer the device now holds
 *   REPORT-TOUCHED pages=N, READY-REPORT       waits for the line "report"
 *   REPORTED bytes=N ms=T, READY-QUIT          waits for the line "quit"
 *
 * Command line: touch=MiB (default 800), report=MiB (64), wait=seconds the kernel waits for
 * the host at each step (120), bogus_actual=N (see test_main). Memory used: the touched region from 64 MiB, the reported
 * region 32 MiB above its end; both must lie in RAM below 4 GiB. */
#include "virtio.h"

#define VIRTIO_BALLOON_F_STATS_VQ       1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_PAGE_REPORTING 5
#define BCFG_NUM_PAGES                  0
#define BCFG_ACTUAL                     4
#define PAGE                            4096u
#define MIB                             (1024u * 1024u)
#define TOUCH_BASE                      (64u * MIB)
#define PFN_BATCH                       4096u      /* PFNs per inflate/deflate buffer (16 KiB) */
#define REPORT_CHUNK                    (4u * MIB) /* one device-writable descriptor of the reporting queue */
#define REPORT_PER_CHAIN                8u

/* Queues: inflate is queue 0 (v.vq), the others follow in xq[] (5.5.2; with both features
 * negotiated the statistics queue is 2 and the reporting queue 3). */
enum { Q_DEFLATE, Q_STATS, Q_REPORT };

enum { /* statistics tags (5.5.6.3) */
       S_SWAP_IN,
       S_SWAP_OUT,
       S_MAJFLT,
       S_MINFLT,
       S_MEMFREE,
       S_MEMTOT,
       S_AVAIL,
       S_CACHES,
       S_NTAGS
};
struct stat_entry {
    uint16_t tag;
    uint64_t val;
} __attribute__((packed));

static struct pci_dev devs[PCI_MAX_DEVS];
static struct vdev dev;
static struct vq *qdef, *qstats, *qrep;
static uint32_t *pfns;        /* pfns[i]: page i of the touched region */
static uint32_t ntouched;     /* pages in the touched region */
static uint32_t nballoon;     /* pfns[0..nballoon) are in the balloon */
static uint32_t peak_balloon; /* the most pages the balloon held */
static struct stat_entry *stats;
static uint32_t stats_sent;
static uint32_t wait_us;
static char cmd[32];
static unsigned cmd_len;

static bool is_balloon(const struct pci_dev *d)
{
    return d->vendor == 0x1af4 &&
           (d->device == 0x1045 || (d->device == 0x1002 && pci_find_cap(d, PCI_CAP_VENDOR, 0)));
}

static uint32_t ms_since(uint64_t t0)
{
    return (uint32_t)((clock_us() - t0) / 1000);
}

/* Halts until an interrupt (a device's, or the 10 ms tick). */
static void idle(void)
{
    __asm__ volatile("sti; hlt; cli" ::: "memory");
}

/* Waits until q has a used entry; false after timeout_us or if the device wants a reset. */
static bool wait_used(struct vq *q, uint32_t timeout_us)
{
    uint64_t t0 = clock_us();
    vq_arm(q, dev.irq);
    while (!vq_pending(q)) {
        if (virtio_status(&dev) & VIRTIO_S_NEEDS_RESET || clock_us() - t0 > timeout_us)
            return false;
        idle();
    }
    return true;
}

static void set_actual(uint32_t pages)
{
    mmio_write32(dev.devcfg + BCFG_ACTUAL, pages);
}

/* ---- statistics ---- */

static void stats_fill(void)
{
    static const uint64_t fixed[S_NTAGS] = {
        [S_SWAP_IN] = 11,
        [S_SWAP_OUT] = 22,
        [S_MAJFLT] = 33,
        [S_MEMFREE] = 123456789ull * 4096,
        [S_AVAIL] = 98765432ull * 4096,
        [S_CACHES] = 4242ull * 4096,
    };
    for (unsigned t = 0; t < S_NTAGS; t++)
        stats[t] = (struct stat_entry){ (uint16_t)t, fixed[t] };
    stats[S_MINFLT].val = stats_sent; /* the number of refreshes so far */
    stats[S_MEMTOT].val = ram_end() - 0x100000;
}

static bool stats_send(void)
{
    stats_fill();
    struct vbuf b = { (uintptr_t)stats, S_NTAGS * sizeof(*stats), false };
    int head = vq_add(qstats, &b, 1);
    if (head < 0)
        return false;
    vq_publish(qstats, (uint16_t)head);
    vq_arm(qstats, dev.irq);
    vq_kick(qstats);
    printf("STATS-SENT %u minor_faults=%u total=%u\n", stats_sent, stats_sent, (uint32_t)stats[S_MEMTOT].val);
    stats_sent++;
    return true;
}

/* The device gives the buffer back when it wants fresh figures. */
static void stats_service(void)
{
    while (vq_pop(qstats, NULL) >= 0)
        if (!stats_send())
            fail("statistics: no descriptor for the refreshed buffer");
}

/* ---- inflate and deflate ---- */

/* Gives pfns[first..first+n) to the device through q, PFN_BATCH per buffer, and waits until
 * it has used them all. */
static bool send_pfns(struct vq *q, uint32_t first, uint32_t n)
{
    uint32_t done = 0, sent = 0;
    while (done < n) {
        while (sent < n && q->nfree) {
            uint32_t k = n - sent < PFN_BATCH ? n - sent : PFN_BATCH;
            struct vbuf b = { (uintptr_t)(pfns + first + sent), k * 4, false };
            vq_publish(q, (uint16_t)vq_add(q, &b, 1));
            sent += k;
        }
        vq_arm(q, dev.irq);
        vq_kick(q);
        if (!wait_used(q, 5000000))
            return false;
        uint32_t len;
        int id;
        while ((id = vq_pop(q, &len)) >= 0) {
            uint32_t k = q->desc[id].len / 4;
            done += k;
        }
        if (id == -2)
            return false;
        stats_service();
    }
    return true;
}

static void inflate(uint32_t want)
{
    uint32_t n = want > ntouched - nballoon ? ntouched - nballoon : want;
    if (n < want)
        printf("note: the target asks for %u more pages; only %u touched pages are left to give\n", want, n);
    if (!n)
        return;
    uint64_t t0 = clock_us();
    if (!send_pfns(&dev.vq, nballoon, n)) {
        fail("inflate: the device did not use %u PFNs", n);
        return;
    }
    nballoon += n;
    if (nballoon > peak_balloon)
        peak_balloon = nballoon;
    set_actual(nballoon);
    printf("INFLATED pages=%u actual=%u ms=%u\n", n, nballoon, ms_since(t0));
}

/* Long loops go in chunks with a look at the clock between them: clock_us() must be called
 * at least every 4 s, and under an emulating KVM 64 MiB of pages take about a second. */
#define CHUNK (64u * MIB)

/* Every page's touched word reads value (0: zero, else its own address); returns the count
 * of pages that do not. */
static uint32_t check_words(uint32_t first, uint32_t n, bool zero)
{
    uint32_t bad = 0, a = TOUCH_BASE + first * PAGE, end = a + n * PAGE;
    while (a != end) {
        uint32_t stop = end - a > CHUNK ? a + CHUNK : end;
        if (zero)
            for (; a != stop; a += PAGE)
                bad += *(volatile uint32_t *)a != 0;
        else
            for (; a != stop; a += PAGE)
                bad += *(volatile uint32_t *)a != a;
        clock_us();
    }
    return bad;
}

/* Writes each page's own address into its first word: one store per page. */
static void touch(uint32_t base, uint32_t npages)
{
    for (uint32_t a = base, end = base + npages * PAGE; a != end;) {
        uint32_t stop = end - a > CHUNK ? a + CHUNK : end;
        for (; a != stop; a += PAGE)
            *(volatile uint32_t *)a = a;
        clock_us();
    }
}

static void deflate(uint32_t want)
{
    uint32_t n = want > nballoon ? nballoon : want;
    if (!n)
        return;
    uint64_t t0 = clock_us();
    uint32_t first = nballoon - n;
    if (!send_pfns(qdef, first, n)) {
        fail("deflate: the device did not use %u PFNs", n);
        return;
    }
    nballoon = first;
    set_actual(nballoon);
    printf("DEFLATED pages=%u actual=%u ms=%u\n", n, nballoon, ms_since(t0));
    if (nballoon)
        return;
    /* Back to full memory: every page that was in the balloon reads as zero, whole pages
     * too (one in 1024), the pages never given keep their contents, and the memory can be
     * used again. */
    uint32_t given = peak_balloon;
    uint32_t bad = check_words(0, given, true);
    check(bad == 0,
          "deflate: the touched word of each of the %u pages that were in the balloon reads 0 (%u do not)",
          given, bad);
    uint32_t pages = 0, nonzero = 0;
    for (uint32_t p = 0; p < given; p += 1024, pages++) {
        const volatile uint32_t *w = (const volatile uint32_t *)(TOUCH_BASE + p * PAGE);
        for (unsigned i = 0; i < PAGE / 4; i++)
            nonzero += w[i] != 0;
    }
    check(pages && nonzero == 0, "deflate: %u whole pages (one in 1024) read as zeroes (%u non-zero words)",
          pages, nonzero);
    bad = check_words(given, ntouched - given, false);
    check(bad == 0, "the %u touched pages never given to the balloon keep their contents (%u changed)",
          ntouched - given, bad);
    touch(TOUCH_BASE, given);
    bad = check_words(0, given, false);
    check(bad == 0, "deflate: the %u pages are usable again (written and read back, %u wrong)", given, bad);
    peak_balloon = 0;
}

/* ---- free page reporting ---- */

static void report(uint32_t base, uint32_t bytes)
{
    uint64_t t0 = clock_us();
    unsigned chains = 0;
    uint64_t used_bytes = 0;
    bool ok = true;
    for (uint32_t off = 0; off < bytes;) {
        struct vbuf b[REPORT_PER_CHAIN];
        unsigned n = 0;
        for (; n < REPORT_PER_CHAIN && off < bytes; n++, off += REPORT_CHUNK)
            b[n] = (struct vbuf){ base + off, bytes - off < REPORT_CHUNK ? bytes - off : REPORT_CHUNK, true };
        int head = vq_add(qrep, b, n);
        if (head < 0) {
            ok = false;
            break;
        }
        vq_publish(qrep, (uint16_t)head);
        chains++;
    }
    vq_arm(qrep, dev.irq);
    vq_kick(qrep);
    /* The reported memory must not be used until the device gives the buffers back. */
    for (unsigned got = 0; ok && got < chains;) {
        if (!wait_used(qrep, 5000000)) {
            ok = false;
            break;
        }
        uint32_t len;
        while (vq_pop(qrep, &len) >= 0)
            got++, used_bytes += len;
        stats_service();
    }
    check(ok, "reporting: %u chains of %u-byte device-writable buffers (%u MiB) came back used", chains,
          REPORT_CHUNK, bytes / MIB);
    printf("REPORTED bytes=%u used_len=%u ms=%u\n", bytes, (uint32_t)used_bytes, ms_since(t0));
}

/* ---- the host's commands: console lines and the configuration ---- */

/* True when the console line cmd has arrived; other lines are ignored. */
static bool got_line(const char *want)
{
    while (serial_can_read()) {
        char c = (char)inb(0x3f8);
        if (c == '\r' || c == '\n') {
            cmd[cmd_len] = 0;
            bool match = cmd_len == strlen(want) && !strncmp(cmd, want, cmd_len);
            cmd_len = 0;
            if (match)
                return true;
        } else if (cmd_len + 1 < sizeof(cmd)) {
            cmd[cmd_len++] = c;
        }
    }
    return false;
}

static uint32_t last_target = 0xffffffffu;

/* Follows num_pages: the device's target, read on every wake-up (a configuration change
 * raises the configuration vector, which ends the halt). */
static void follow_target(void)
{
    uint32_t t = virtio_cfg32(&dev, BCFG_NUM_PAGES);
    if (t != last_target) {
        printf("TARGET num_pages=%u actual=%u\n", t, nballoon);
        last_target = t;
    }
    if (t > nballoon && nballoon < ntouched)
        inflate(t - nballoon);
    else if (t < nballoon)
        deflate(nballoon - t);
}

/* Serves the device until the console line want arrives (or, with want NULL, until the
 * balloon has been inflated and deflated back to empty). False after wait_us without it. */
static bool serve(const char *want)
{
    uint64_t t0 = clock_us();
    bool inflated = false;
    for (;;) {
        stats_service();
        follow_target();
        inflated |= nballoon > 0;
        if (want ? got_line(want) : inflated && !nballoon)
            return true;
        if (clock_us() - t0 > wait_us)
            return false;
        if (virtio_status(&dev) & VIRTIO_S_NEEDS_RESET) {
            fail("the device asked for a reset");
            return false;
        }
        idle();
    }
}

void test_main(void)
{
    uint32_t touch_mb = (uint32_t)arg_u64("touch", 800), report_mb = (uint32_t)arg_u64("report", 64);
    wait_us = (uint32_t)arg_u64("wait", 120) * 1000000u;
    virtio_irq_init();
    dma_reset();
    pci_ecam_init();
    pci_set_access(PCI_PORTS);
    unsigned ndevs = pci_scan(devs, PCI_MAX_DEVS), idx = ndevs;
    for (unsigned i = 0; i < ndevs; i++)
        if (is_balloon(&devs[i]))
            idx = i;
    if (idx == ndevs) {
        fail("no virtio-balloon device (1af4:1045)");
        return;
    }
    uint64_t end = ram_end();
    uint32_t report_base = TOUCH_BASE + (touch_mb + 32) * MIB;
    if ((uint64_t)report_base + report_mb * MIB > end || touch_mb > 2048) {
        fail("touch=%u report=%u MiB do not fit below the end of RAM (%u MiB)", touch_mb, report_mb,
             (uint32_t)(end / MIB));
        return;
    }
    ntouched = touch_mb * (MIB / PAGE);
    pfns = dma_alloc(ntouched * 4 + 4, PAGE);
    stats = dma_alloc(S_NTAGS * sizeof(*stats), 64);
    if (!pfns || !stats) {
        fail("no DMA memory for %u PFNs", ntouched);
        return;
    }
    /* kvmbox puts 64-bit BARs above 4 GiB, out of reach of this 32-bit guest. */
    int moved = pci_relocate(devs, ndevs, is_balloon, 0xc0000000u, 0xe0000000u);
    check(moved > 0, "BARs of the balloon relocated below 4 GiB (%d)", moved);

    if (virtio_probe(&dev, &devs[idx], 0)) {
        fail("virtio_probe");
        return;
    }
    dev.nxq = 3;
    uint64_t want = 1ull << VIRTIO_BALLOON_F_STATS_VQ | 1ull << VIRTIO_BALLOON_F_PAGE_REPORTING;
    int r = virtio_start(&dev, want, NULL);
    bool feats = r == 0 && virtio_has(&dev, VIRTIO_BALLOON_F_STATS_VQ) &&
                 virtio_has(&dev, VIRTIO_BALLOON_F_PAGE_REPORTING);
    check(feats,
          "device started (%d): offered %x:%x, STATS_VQ and PAGE_REPORTING negotiated, %u queues, MSI-X %u "
          "vectors",
          r, (uint32_t)(dev.offered >> 32), (uint32_t)dev.offered, dev.num_queues, dev.msix_n);
    if (!feats)
        return;
    qdef = &dev.xq[Q_DEFLATE], qstats = &dev.xq[Q_STATS], qrep = &dev.xq[Q_REPORT];
    virtio_set_irq(&dev, dev.msix_n >= 2);
    printf("BALLOON queues=%u sizes=%u/%u/%u/%u irq=%d\n", dev.num_queues, dev.vq.size, qdef->size,
           qstats->size, qrep->size, dev.irq);
    check(virtio_cfg32(&dev, BCFG_NUM_PAGES) == 0, "the initial target is the whole memory (num_pages %u)",
          virtio_cfg32(&dev, BCFG_NUM_PAGES));
    /* bogus_actual=N: start with actual = N instead of 0 (what does the VMM make of a guest
     * that claims more pages than it has?); the first inflate or deflate corrects it. */
    uint64_t bogus = arg_u64("bogus_actual", 0);
    set_actual((uint32_t)bogus);
    if (bogus)
        printf("ACTUAL-WRITTEN %u\n", (uint32_t)bogus);
    stats_send();

    /* a) touch the region, one word per page, and list its PFNs. */
    uint64_t t0 = clock_us();
    uint32_t pfn0 = TOUCH_BASE / PAGE;
    touch(TOUCH_BASE, ntouched);
    for (uint32_t i = 0; i < ntouched; i++)
        pfns[i] = pfn0 + i;
    printf("TOUCHED pages=%u ms=%u\n", ntouched, ms_since(t0));
    printf("READY-INFLATE\n");

    /* b-d) follow the host's targets until the balloon has been full and is empty again. */
    if (!serve(NULL)) {
        fail("no inflate and deflate back to the full memory within the wait (balloon %u pages)", nballoon);
        finish();
    }

    /* e) free page reporting of another region, when the host says so. */
    uint32_t rpages = report_mb * (MIB / PAGE);
    touch(report_base, rpages);
    printf("REPORT-TOUCHED pages=%u\n", rpages);
    printf("READY-REPORT\n");
    if (!serve("report")) {
        fail("no 'report' command from the host");
        finish();
    }
    report(report_base, report_mb * MIB);
    printf("READY-QUIT\n");
    if (!serve("quit"))
        fail("no 'quit' command from the host");
    uint32_t bad = check_words((report_base - TOUCH_BASE) / PAGE, rpages, true);
    /* The spec leaves reported pages' contents undefined; kvmbox and QEMU discard them. */
    printf("%s: reported pages read as zero afterwards (%u of %u do not)\n", bad ? "note" : "info", bad,
           rpages);
    finish();
}
