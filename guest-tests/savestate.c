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
 * so after the last round the host can check every sector of the image itself.
 *
 * mode=cd: the virtio-scsi CD-ROM, locked, read whole pass after pass (see cd_mode). */
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

/* ---- cd ---- */

#define CD_BLOCK 2048u
#define CD_CHUNK 32u /* blocks per READ(10): 64 KiB */
#define SCSI_REQ 51  /* virtio_scsi_req_cmd: lun[8], id, task_attr, prio, crn, cdb[32] */
/* virtio_scsi_resp_cmd: sense_len, resid, status_qualifier, status, response, sense[96] */
#define SCSI_RESP 108

static struct vdev cd;
static uint8_t *cd_req, *cd_resp, *cd_data;

static bool is_scsi(const struct pci_dev *d)
{
    return d->vendor == 0x1af4 &&
           (d->device == 0x1048 || (d->device == 0x1004 && pci_find_cap(d, PCI_CAP_VENDOR, 0)));
}

/* One command to LUN 0 on the request queue (queue 2), polled to completion. Returns the
 * SCSI status (0 GOOD), or -1 for a virtio or transport failure. */
static int scsi_cmd(const uint8_t *cdb, unsigned cdb_len, uint32_t data_len)
{
    struct vq *q = &cd.xq[1];
    memset(cd_req, 0, SCSI_REQ);
    cd_req[0] = 1, cd_req[2] = 0x40; /* target 0, flat-space LUN 0 */
    memcpy(cd_req + 19, cdb, cdb_len);
    memset(cd_resp, 0xee, SCSI_RESP);
    struct vbuf b[3] = { { (uintptr_t)cd_req, SCSI_REQ, false },
                         { (uintptr_t)cd_resp, SCSI_RESP, true },
                         { (uintptr_t)cd_data, data_len, true } };
    int head = vq_add(q, b, data_len ? 3 : 2);
    if (head < 0)
        return -1;
    vq_publish(q, (uint16_t)head);
    vq_kick(q);
    uint64_t t0 = clock_us();
    while (!vq_pending(q)) {
        if (clock_us() - t0 > TIMEOUT_US)
            return -1;
        __asm__ volatile("pause");
    }
    if (vq_pop(q, NULL) != head || cd_resp[11] != 0)
        return -1;
    return cd_resp[10];
}

/* The medium's checksum: 64-bit little-endian words, h = (h ^ w) * FNV prime (the host
 * computes the same over the image). */
static uint64_t fold(uint64_t h, const uint8_t *p, uint32_t len)
{
    const uint64_t *w = (const uint64_t *)p; /* the buffer is page aligned */
    for (uint32_t i = 0; i < len / 8; i++)
        h = (h ^ w[i]) * 0x100000001b3ull;
    return h;
}

/* mode=cd: the virtio-scsi CD-ROM's medium locked (PREVENT ALLOW MEDIUM REMOVAL), then read
 * whole again and again (rounds=N, 0: for ever) by 64 KiB READ(10)s, printing
 * "CDPASS n sum=H locked=L sense=S" per pass: the checksum of every block, whether MODE
 * SENSE's capabilities page still says the medium is locked, and the sense key and code
 * REQUEST SENSE returns for the unknown command the pass began with (520). */
static void cd_mode(void)
{
    pci_set_access(PCI_PORTS);
    unsigned ndevs = pci_scan(devs, PCI_MAX_DEVS), idx = ndevs;
    for (unsigned i = 0; i < ndevs; i++)
        if (is_scsi(&devs[i]))
            idx = i;
    if (idx == ndevs) {
        fail("no virtio-scsi controller");
        return;
    }
    if (pci_relocate(devs, ndevs, is_scsi, 0xc0000000u, 0xe0000000u) <= 0) {
        fail("cannot move the controller's BAR below 4 GiB");
        return;
    }
    cd_req = dma_alloc(4096, 64);
    cd_resp = dma_alloc(4096, 64);
    cd_data = dma_alloc(CD_CHUNK * CD_BLOCK, 4096);
    if (!cd_req || !cd_resp || !cd_data || virtio_probe(&cd, &devs[idx], 0) != 0) {
        fail("cannot find the virtio-scsi controller's registers");
        return;
    }
    cd.nxq = 2; /* control (0), event (1), request (2) */
    if (virtio_start(&cd, 0, NULL) != 0) {
        fail("cannot start the virtio-scsi controller");
        return;
    }
    static const uint8_t tur[6] = { 0x00 }, lock[6] = { 0x1e, 0, 0, 0, 1, 0 }, cap[10] = { 0x25 };
    /* a fresh LUN may report UNIT ATTENTION once: TEST UNIT READY until it is ready */
    for (int i = 0; i < 4 && scsi_cmd(tur, 6, 0) != 0; i++)
        ;
    int r1 = scsi_cmd(lock, 6, 0), r2 = r1 == 0 ? scsi_cmd(cap, 10, 8) : -2;
    if (r1 != 0 || r2 != 0) {
        fail("PREVENT ALLOW MEDIUM REMOVAL (%d) or READ CAPACITY (%d) failed: response %u, sense key %u", r1,
             r2, cd_resp[11], cd_resp[12 + 2]);
        return;
    }
    /* READ CAPACITY: the last block's address, big endian */
    uint32_t last = (uint32_t)cd_data[0] << 24 | (uint32_t)cd_data[1] << 16 | (uint32_t)cd_data[2] << 8 |
                    cd_data[3];
    uint32_t blocks = last + 1;
    uint64_t rounds = arg_u64("rounds", 0);
    printf("SAVESTATE-READY mode=cd blocks=%u\n", blocks);
    for (uint64_t n = 1; !rounds || n <= rounds; n++) {
        uint64_t h = 0xcbf29ce484222325ull;
        /* an unknown opcode leaves sense data (ILLEGAL REQUEST, INVALID COMMAND OPERATION
         * CODE) that the reads do not clear: REQUEST SENSE must still find it at the end */
        static const uint8_t bad[6] = { 0xff };
        if (scsi_cmd(bad, 6, 0) != 2) {
            fail("pass %llu: an unknown opcode did not fail with CHECK CONDITION", (unsigned long long)n);
            return;
        }
        for (uint32_t lba = 0; lba < blocks; lba += CD_CHUNK) {
            uint32_t cnt = blocks - lba < CD_CHUNK ? blocks - lba : CD_CHUNK;
            uint8_t rd[10] = {
                0x28,         0, (uint8_t)(lba >> 24), (uint8_t)(lba >> 16), (uint8_t)(lba >> 8),
                (uint8_t)lba, 0, (uint8_t)(cnt >> 8),  (uint8_t)cnt,         0
            };
            if (scsi_cmd(rd, 10, cnt * CD_BLOCK) != 0) {
                fail("pass %llu: READ(10) of %u blocks at %u failed", (unsigned long long)n, cnt, lba);
                return;
            }
            h = fold(h, cd_data, cnt * CD_BLOCK);
        }
        /* MODE SENSE(10), page 0x2A: byte 6 of the page, bit 1 is "locked" */
        static const uint8_t ms[10] = { 0x5a, 0x08, 0x2a, 0, 0, 0, 0, 0, 64, 0 };
        int locked = scsi_cmd(ms, 10, 64) == 0 ? (cd_data[8 + 6] >> 1) & 1 : -1;
        static const uint8_t rs[6] = { 0x03, 0, 0, 0, 18, 0 };
        int sense = scsi_cmd(rs, 6, 18) == 0 ? (cd_data[2] & 0xf) << 8 | cd_data[12] : -1;
        printf("CDPASS %llu sum=%llx locked=%d sense=%x\n", (unsigned long long)n, (unsigned long long)h,
               locked, sense);
    }
    pass("%llu passes over %u blocks", (unsigned long long)rounds, blocks);
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
    else if (!strncmp(mode, "cd", 3))
        cd_mode();
    else if (!strncmp(mode, "dots", 5))
        dots_mode();
    else
        count_mode();
}
