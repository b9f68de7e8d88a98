/* The guest of tests/t-savestate.sh: it is saved while it runs and restored, and must not
 * notice (beyond the time the host chose to keep it saved, which kvmclock hides).
 *
 * mode=count (default): prints "COUNT n ms=M" every period=P ms (100) of kvmclock time (n from 0,
 * M the kvmclock in ms), waiting between lines with hlt on the LAPIC timer; every line also
 * checks that kvmclock and the TSC moved forward by a sane amount since the last one and
 * prints "LEAP n ..." when they did not (the host fails the test on it). Ends with PASS and
 * the debug-exit port after count=N lines (0: never).
 *
 * mode=dots: touch=MiB as in count mode, "SAVESTATE-READY mode=dots", then dots without end,
 * a newline after every 64: output within a few instructions of any moment, so that the time
 * from a restore to the guest's next output measures the restore, not the guest's own speed
 * (a COUNT line takes the emulated guest of a PVM host about 20 ms; bench/savestate-bench.sh).
 *
 * mode=blk: the virtio-blk disk with serial "rw0", MSI-X interrupts, QD 32 of 64 KiB
 * requests: rounds g = 1..rounds=N of a whole-disk write of generation g followed by a read
 * back and check, printing "ROUND g ok" or a FAIL line. Sector s of generation g:
 *   v = (s * 0x9E3779B97F4A7C15 + g * 0xD6E8FEB86659FD93) mod 2^64;
 *   bytes 0-7 = v, bytes 8-503 = g & 0xff, bytes 504-511 = ~v (little endian),
 * so after the last round the host can check every sector of the image itself. */
#include "virtio.h"

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MULT                    0x9E3779B97F4A7C15ull
#define GEN_MULT                0xD6E8FEB86659FD93ull
#define WIN_BYTES               (1u << 20)
#define REQ_BYTES               65536u
#define TIMEOUT_US              10000000

struct pvclock {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t mul;
    int8_t shift;
    uint8_t flags, pad[2];
} __attribute__((packed));

static volatile struct pvclock clock __attribute__((aligned(64)));

static uint64_t kvmclock_ns(void)
{
    uint32_t v;
    uint64_t t;
    do {
        v = clock.version;
        __asm__ volatile("" ::: "memory");
        uint64_t d = rdtsc() - clock.tsc_timestamp;
        d = clock.shift >= 0 ? d << clock.shift : d >> -clock.shift;
        t = clock.system_time + (d >> 32) * clock.mul + (((d & 0xffffffffu) * clock.mul) >> 32);
        __asm__ volatile("" ::: "memory");
    } while ((v & 1) || v != clock.version);
    return t;
}

/* ---- application processors, busy (cpus=N) ---- */

#define TRAMP_BASE 0x10000
#define MAX_CPUS   8

extern const uint8_t tramp_start[], tramp_end[], tramp_count[], tramp_stacks[], tramp_entry[];
static uint8_t stacks[MAX_CPUS][4096] __attribute__((aligned(16)));
static volatile uint32_t work[MAX_CPUS];
static volatile uint32_t arrived;

static void ap_main(uint32_t idx)
{
    __atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
    for (;;)
        if (idx < MAX_CPUS)
            work[idx]++;
}

static void *tramp_field(const uint8_t *sym)
{
    return (void *)(uintptr_t)(TRAMP_BASE + (uint32_t)(sym - tramp_start));
}

static void send_ipi(uint32_t icr)
{
    mmio_write32(LAPIC_BASE + 0x310, 0);
    mmio_write32(LAPIC_BASE + 0x300, icr);
    for (int i = 0; i < 100000 && (mmio_read32(LAPIC_BASE + 0x300) & (1u << 12)); i++)
        pause();
}

/* INIT-SIPI-SIPI to all others; returns how many arrived. */
static unsigned start_aps(unsigned n)
{
    memcpy((void *)TRAMP_BASE, tramp_start, (size_t)(tramp_end - tramp_start));
    *(uint32_t *)tramp_field(tramp_count) = 0;
    *(uint32_t *)tramp_field(tramp_stacks) = (uint32_t)(uintptr_t)stacks;
    *(uint32_t *)tramp_field(tramp_entry) = (uint32_t)(uintptr_t)ap_main;
    send_ipi(0x000c4500);
    delay_us(10000);
    for (int i = 0; i < 2; i++) {
        send_ipi(0x000c4600 | (TRAMP_BASE >> 12));
        delay_us(200);
    }
    for (int i = 0; i < 300 && arrived < n - 1; i++)
        delay_us(10000);
    return arrived;
}

/* ---- count ---- */

static void touch_ram(void);

static void count_mode(void)
{
    uint32_t r[4];
    cpuid(0x40000001, 0, r);
    if (!(r[0] & (1u << 3))) {
        fail("no kvmclock (KVM_FEATURE_CLOCKSOURCE2)");
        return;
    }
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint32_t)(uintptr_t)&clock | 1);
    uint64_t max = arg_u64("count", 0), period_ns = arg_u64("period", 100) * 1000000ull;
    /* touch=MiB: dirties that much RAM from 16 MiB up first (one word per page), so a save
     * has RAM to write and a restore pages to map (bench/savestate-bench.sh). */
    /* What the word at 16 MiB held at boot: 0 on fresh RAM (a reboot of a restored VM too). */
    uint32_t ram16 = ram_end() > 16777216u ? *(volatile uint32_t *)(uintptr_t)16777216u : 0;
    touch_ram();
    /* cpus=N: the other vCPUs count as fast as they can; each line checks that every one
     * of them moved since the last line ("STALL" when one did not). */
    unsigned cpus = (unsigned)arg_u64("cpus", 1), aps = 0;
    if (cpus > MAX_CPUS)
        cpus = MAX_CPUS;
    if (cpus > 1 && (aps = start_aps(cpus)) != cpus - 1)
        fail("%u of %u application processors arrived", aps, cpus - 1);
    uint32_t seen[MAX_CPUS] = { 0 };
    uint64_t last_ns = kvmclock_ns(), last_tsc = rdtsc();
    printf("SAVESTATE-READY mode=count aps=%u ram16=%x\n", aps, (unsigned)ram16);
    for (uint64_t n = 0; !max || n < max; n++) {
        uint64_t now = kvmclock_ns(), tsc = rdtsc();
        /* Steps of period=ms (default 100): a step of more than 2 s of guest time is a leap
         * (the host keeps the saved VM for longer than that), a clock that went back too. */
        if (now < last_ns || now - last_ns > 2000000000ull || tsc < last_tsc)
            printf("LEAP %llu kvmclock_ms=%llu->%llu tsc_back=%u\n", (unsigned long long)n,
                   (unsigned long long)(last_ns / 1000000), (unsigned long long)(now / 1000000),
                   tsc < last_tsc);
        last_ns = now, last_tsc = tsc;
        for (unsigned i = 0; i < aps && n > 0; i++)
            if (work[i] == seen[i])
                printf("STALL %llu ap %u at %u\n", (unsigned long long)n, i, (unsigned)work[i]);
        for (unsigned i = 0; i < aps; i++)
            seen[i] = work[i];
        printf("COUNT %llu ms=%llu\n", (unsigned long long)n, (unsigned long long)(now / 1000000));
        while (kvmclock_ns() - now < period_ns)
            irq_window(VIRTIO_VEC_TICK, 10000);
    }
    pass("counted to %llu", (unsigned long long)max);
}

/* ---- blk ---- */

static struct pci_dev devs[PCI_MAX_DEVS];
static struct blk disk;
static uint8_t *wbuf, *rbuf;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static uint64_t sector_value(uint64_t s, uint64_t g)
{
    return s * MULT + g * GEN_MULT;
}

static void stamp(uint8_t *buf, uint64_t first, uint32_t n, uint64_t g)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = buf + 512 * i;
        uint64_t v = sector_value(first + i, g), nv = ~v;
        memcpy(p, &v, 8);
        memset(p + 8, (int)(g & 0xff), 496);
        memcpy(p + 504, &nv, 8);
    }
}

/* The first sector of [first, first+n) in buf that is not generation g, or n. */
static uint32_t check_gen(const uint8_t *buf, uint64_t first, uint32_t n, uint64_t g)
{
    static uint8_t want[512];
    for (uint32_t i = 0; i < n; i++) {
        stamp(want, first + i, 1, g);
        if (memcmp(buf + 512 * i, want, 512))
            return i;
    }
    return n;
}

/* Reads or writes [first, first+n) at QD 32; 0, or a BLK_STATUS_* / the first bad status. */
static int io_window(bool write, uint64_t first, uint32_t n, uint8_t *buf)
{
    uint32_t next = 0, inflight = 0, per = REQ_BYTES / 512;
    int bad = 0;
    while (next < n || inflight) {
        while (next < n && inflight < BLK_MAX_SLOTS) {
            uint32_t cnt = n - next < per ? n - next : per;
            struct vbuf seg = { (uintptr_t)(buf + 512 * next), cnt * 512, !write };
            if (blk_submit(&disk, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, first + next, &seg, 1) < 0)
                break;
            inflight++, next += cnt;
        }
        virtio_kick(&disk.v);
        int c = blk_complete(&disk, TIMEOUT_US);
        if (c < 0)
            return c;
        inflight--;
        if (disk.slots[c].status != VIRTIO_BLK_S_OK && !bad)
            bad = 1000 + disk.slots[c].status;
    }
    return bad;
}

static void blk_mode(void)
{
    pci_set_access(PCI_PORTS);
    unsigned ndevs = pci_scan(devs, PCI_MAX_DEVS), idx;
    if (blk_find(devs, ndevs, &idx, 1) != 1) {
        fail("no virtio-blk disk");
        return;
    }
    /* Its 64-bit BAR is placed above 4 GiB: moved where this 32-bit guest reaches it. */
    if (pci_relocate(devs, ndevs, is_blk, 0xc0000000u, 0xe0000000u) <= 0) {
        fail("cannot move the disk's BAR below 4 GiB");
        return;
    }
    wbuf = dma_alloc(WIN_BYTES, 4096);
    rbuf = dma_alloc(WIN_BYTES, 4096);
    if (!wbuf || !rbuf || blk_open(&disk, &devs[idx], 0, 0) != 0) {
        fail("cannot start the disk or allocate buffers");
        return;
    }
    virtio_set_irq(&disk.v, true);
    uint64_t rounds = arg_u64("rounds", 4);
    uint32_t win = WIN_BYTES / 512;
    printf("SAVESTATE-READY mode=blk capacity=%u\n", (uint32_t)disk.capacity);
    for (uint64_t g = 1; g <= rounds; g++) {
        int e = 0;
        for (uint64_t first = 0; first < disk.capacity && !e; first += win) {
            uint32_t n = disk.capacity - first < win ? (uint32_t)(disk.capacity - first) : win;
            stamp(wbuf, first, n, g);
            e = io_window(true, first, n, wbuf);
        }
        for (uint64_t first = 0; first < disk.capacity && !e; first += win) {
            uint32_t n = disk.capacity - first < win ? (uint32_t)(disk.capacity - first) : win;
            memset(rbuf, 0x77, n * 512);
            e = io_window(false, first, n, rbuf);
            uint32_t i = e ? n : check_gen(rbuf, first, n, g);
            if (i < n) {
                fail("round %llu: sector %llu does not hold generation %llu", (unsigned long long)g,
                     (unsigned long long)(first + i), (unsigned long long)g);
                return;
            }
        }
        if (e) {
            fail("round %llu: I/O failed (%d)", (unsigned long long)g, e);
            return;
        }
        printf("ROUND %llu ok\n", (unsigned long long)g);
    }
    pass("%llu rounds of writes and read-backs over %u sectors", (unsigned long long)rounds,
         (uint32_t)disk.capacity);
}

static void touch_ram(void)
{
    uint32_t touch = (uint32_t)arg_u64("touch", 0);
    for (uint32_t off = 0; off < touch * 1048576u && 16777216u + off < ram_end(); off += 4096)
        *(volatile uint32_t *)(uintptr_t)(16777216u + off) = off | 1;
}

static void dots_mode(void)
{
    touch_ram();
    printf("SAVESTATE-READY mode=dots\n");
    for (uint32_t n = 1;; n++)
        serial_putc(n % 65 ? '.' : '\n');
}

void test_main(void)
{
    char mode[16];
    arg_str("mode", mode, sizeof(mode), "count");
    virtio_irq_init();
    dma_reset();
    sti();
    if (!strncmp(mode, "blk", 4))
        blk_mode();
    else if (!strncmp(mode, "dots", 5))
        dots_mode();
    else
        count_mode();
}
