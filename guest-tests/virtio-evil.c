/* Hostile virtqueues: the guest breaks the virtio rules on the virtio-blk disk "rw0" while
 * "rw1" (a second device) must keep working. Each case hand-builds one bad request (or bad
 * ring addresses), notifies, and waits 500 ms. Acceptable outcomes:
 *   - the request is used with IOERR/UNSUPP in its status byte (for a chain with no usable
 *     status byte: used with length 0);
 *   - the device sets DEVICE_NEEDS_RESET (the driver then resets and restarts it);
 *   - for rings outside RAM only: the device never uses the request (then: reset).
 * Never acceptable: status OK, a write to a device-readable buffer, a dead VMM. After every
 * case a write + read-back of one sector works on rw0 (after the reset, if there was one)
 * and on rw1. Sectors 8-15 of rw0 are the cases' scratch, 64 and up the round trips'.
 *
 * lenient=1 on the command line (the QEMU validation runs) also accepts status OK where
 * QEMU 7.2 gives it: buffers at addresses without RAM (QEMU's DMA goes through a bounce
 * buffer and drops what falls outside RAM, as a PCI master abort would) and an indirect flag
 * inside an indirect table (QEMU takes the entry as a plain buffer). Such lines say
 * "allowed by lenient=1"; kvmbox runs without it. */
#include "virtio.h"

#define CASE_TIMEOUT_US 500000
#define POISON          0xee
#define SCRATCH_SECTOR  8
#define RT_SECTOR       64

static struct pci_dev devs[PCI_MAX_DEVS];
static struct blk disks[2];
static struct blk *victim, *other;
static struct blk_hdr *hdr;
static volatile uint8_t *status;
static uint8_t *data, *rt_w, *rt_r;
static struct vring_desc *table, *table2;
static uint64_t ram_top;
static unsigned ncase;
static bool lenient;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

/* Write and read back one sector; true if it round-trips. */
static bool round_trip(struct blk *b, uint32_t tag)
{
    for (unsigned i = 0; i < 512; i += 4)
        *(uint32_t *)(rt_w + i) = tag * 0x01000193u ^ i;
    memset(rt_r, 0, 512);
    uint64_t sector = RT_SECTOR + tag % 64;
    return blk_io(b, VIRTIO_BLK_T_OUT, sector, rt_w, 512) == VIRTIO_BLK_S_OK &&
           blk_io(b, VIRTIO_BLK_T_IN, sector, rt_r, 512) == VIRTIO_BLK_S_OK && !memcmp(rt_w, rt_r, 512);
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    volatile struct vring_desc *d = &victim->v.vq.desc[i];
    d->addr = addr, d->len = len, d->flags = flags, d->next = next;
}

static struct vring_desc mk(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    return (struct vring_desc){ addr, len, flags, next };
}

static void prepare(uint32_t type)
{
    *hdr = (struct blk_hdr){ type, 0, SCRATCH_SECTOR };
    *status = POISON;
    memset(data, POISON, 1024);
    vq_reclaim_all(&victim->v.vq);
}

enum outcome { O_ERROR, O_RESET, O_TIMEOUT, O_OK, O_NO_STATUS, O_START };
static const char *const outcome_name[] = { "error status", "DEVICE_NEEDS_RESET",    "never used",
                                            "status OK",    "used without a status", "refused at setup" };

/* Publishes head 0, waits, and classifies what the device did. st: where a status may
 * legitimately land (NULL: nowhere). */
static enum outcome run(volatile uint8_t *st, uint32_t *used_len)
{
    struct vq *q = &victim->v.vq;
    vq_publish(q, 0);
    virtio_kick(&victim->v);
    int w = virtio_wait(&victim->v, CASE_TIMEOUT_US);
    if (w < 0)
        return O_RESET;
    if (w == 0)
        return (virtio_status(&victim->v) & VIRTIO_S_NEEDS_RESET) ? O_RESET : O_TIMEOUT;
    *used_len = q->used->ring[q->used_idx & (q->size - 1)].len;
    q->used_idx++;
    if (virtio_status(&victim->v) & VIRTIO_S_NEEDS_RESET)
        return O_RESET;
    if (st && (*st == VIRTIO_BLK_S_IOERR || *st == VIRTIO_BLK_S_UNSUPP))
        return O_ERROR;
    if (st && *st == VIRTIO_BLK_S_OK)
        return O_OK;
    return O_NO_STATUS;
}

/* Judges a case, then shows that both devices still work. readable: a device-readable
 * buffer that must still hold POISON (NULL: none). */
static void judge(const char *what, enum outcome o, uint32_t used_len, bool ring_case,
                  const volatile uint8_t *readable, bool qemu_ok)
{
    ncase++;
    bool allowed = o == O_OK && qemu_ok && lenient;
    bool ok = o == O_ERROR || o == O_RESET || o == O_START || (o == O_TIMEOUT && ring_case) ||
              (o == O_NO_STATUS && used_len == 0) || allowed;
    bool clean = !readable || *readable == POISON;
    bool reset = o == O_RESET || o == O_TIMEOUT || o == O_START;
    int r = 0;
    if (reset)
        r = blk_restart(victim);
    else
        vq_reclaim_all(&victim->v.vq);
    bool same = r == 0 && round_trip(victim, ncase), oth = round_trip(other, ncase);
    check(ok && clean && same && oth, "case %u, %s: %s%s%s (used len %u)%s; then %s %s, %s %s", ncase, what,
          outcome_name[o], allowed ? " (allowed by lenient=1)" : "",
          clean ? "" : ", WROTE A DEVICE-READABLE BUFFER", used_len, reset ? ", reset" : "", victim->serial,
          same ? "works" : "BROKEN", other->serial, oth ? "works" : "BROKEN");
}

/* A one-chain case in the main descriptor table: n descriptors, head 0. */
static void chain_case(const char *what, uint32_t type, const struct vring_desc *d, unsigned n,
                       volatile uint8_t *st, const volatile uint8_t *readable, bool qemu_ok)
{
    prepare(type);
    for (unsigned i = 0; i < n; i++)
        set_desc(i, d[i].addr, d[i].len, d[i].flags, d[i].next);
    uint32_t len = 0;
    enum outcome o = run(st, &len);
    judge(what, o, len, false, readable, qemu_ok);
}

/* A chain through an indirect table (entries copied into table, n of them, len bytes). */
static void indirect_case(const char *what, const struct vring_desc *t, unsigned n, uint64_t addr,
                          uint32_t len, volatile uint8_t *st, bool qemu_ok)
{
    prepare(VIRTIO_BLK_T_IN);
    for (unsigned i = 0; i < n; i++)
        table[i] = t[i];
    set_desc(0, addr, len, VRING_DESC_F_INDIRECT, 0);
    uint32_t ulen = 0;
    enum outcome o = run(st, &ulen);
    judge(what, o, ulen, false, NULL, qemu_ok);
}

#define H(t)     mk((uintptr_t)hdr, sizeof(*hdr), t, 1)
#define W        VRING_DESC_F_WRITE
#define N        VRING_DESC_F_NEXT
#define S(flags) mk((uintptr_t)status, 1, flags, 0)

static void bad_addresses(void)
{
    static const struct {
        const char *name;
        uint64_t addr;
        uint32_t len;
    } bad[] = {
        { "buffer at 0xf0000000 (no RAM)", 0xf0000000u, 512 },
        { "buffer at 64 GiB (address above 4 GiB)", 0x1000000000ull, 512 },
        { "buffer at 2^64-4096 (address + length wraps)", 0xfffffffffffff000ull, 8192 },
        { "buffer straddling the end of RAM", 0, 512 },
        { "length 0xfffffff0", 1, 0xfffffff0u },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t addr = bad[i].addr == 0 ? ram_top - 256 : bad[i].addr == 1 ? (uintptr_t)data : bad[i].addr;
        char what[96];
        struct vring_desc in[] = { H(N), mk(addr, bad[i].len, W | N, 2), S(W) };
        snprintf(what, sizeof(what), "read into %s", bad[i].name);
        chain_case(what, VIRTIO_BLK_T_IN, in, 3, status, NULL, true);
        struct vring_desc out[] = { H(N), mk(addr, bad[i].len, N, 2), S(W) };
        snprintf(what, sizeof(what), "write from %s", bad[i].name);
        chain_case(what, VIRTIO_BLK_T_OUT, out, 3, status, NULL, true);
    }
}

static void bad_chains(void)
{
    uint16_t size = victim->v.vq.size;
    struct vring_desc loop[] = { H(N), mk((uintptr_t)data, 512, W | N, 2),
                                 mk((uintptr_t)data + 512, 512, W | N, 1) };
    chain_case("descriptor loop (next points back)", VIRTIO_BLK_T_IN, loop, 3, NULL, NULL, false);

    /* Every descriptor in one chain whose last one points back to the second: longer than
     * the queue. Built in place (it needs the whole table). */
    prepare(VIRTIO_BLK_T_IN);
    set_desc(0, (uintptr_t)hdr, sizeof(*hdr), N, 1);
    for (uint16_t i = 1; i < size; i++)
        set_desc(i, (uintptr_t)data + (i & 1) * 512, 512, W | N, (uint16_t)(i + 1 < size ? i + 1 : 1));
    uint32_t len = 0;
    enum outcome o = run(NULL, &len);
    char what[80];
    snprintf(what, sizeof(what), "chain through all %u descriptors and around again", size);
    judge(what, o, len, false, NULL, false);

    struct vring_desc next_out[] = { H(N), mk((uintptr_t)data, 512, W | N, size), S(W) };
    chain_case("next index beyond the queue size", VIRTIO_BLK_T_IN, next_out, 3, status, NULL, false);

    struct vring_desc hdr_w[] = { H(W | N), mk((uintptr_t)data, 512, W | N, 2), S(W) };
    chain_case("header device-writable", VIRTIO_BLK_T_IN, hdr_w, 3, status, NULL, false);

    /* The status descriptor is device-readable: it must stay untouched; by message framing
     * a device may take the last writable byte (data[511]) as the status. */
    struct vring_desc st_r[] = { H(N), mk((uintptr_t)data, 512, W | N, 2), S(0) };
    chain_case("status device-readable (after a writable buffer)", VIRTIO_BLK_T_IN, st_r, 3, data + 511,
               status, false);

    struct vring_desc only_hdr[] = { mk((uintptr_t)hdr, sizeof(*hdr), 0, 0) };
    chain_case("no status byte (header only)", VIRTIO_BLK_T_IN, only_hdr, 1, NULL, NULL, false);

    struct vring_desc no_w[] = { H(N), mk((uintptr_t)data, 512, 0, 0) };
    chain_case("write with nothing device-writable", VIRTIO_BLK_T_OUT, no_w, 2, NULL, NULL, false);

    struct vring_desc short_hdr[] = { mk((uintptr_t)hdr, 8, N, 1), mk((uintptr_t)data, 512, W | N, 2), S(W) };
    chain_case("header of 8 bytes", VIRTIO_BLK_T_IN, short_hdr, 3, status, NULL, false);
}

static void bad_indirect(void)
{
    if (!virtio_has(&victim->v, VIRTIO_F_INDIRECT_DESC)) {
        printf("SKIP: indirect cases: the device does not offer VIRTIO_F_INDIRECT_DESC\n");
        return;
    }
    uintptr_t t = (uintptr_t)table;
    struct vring_desc nested[] = { mk((uintptr_t)hdr, 16, N, 1),
                                   mk((uintptr_t)table2, 48, VRING_DESC_F_INDIRECT | N, 2),
                                   mk((uintptr_t)status, 1, W, 0) };
    table2[0] = mk((uintptr_t)data, 512, W, 0);
    indirect_case("indirect descriptor inside an indirect table", nested, 3, t, 48, status, true);

    struct vring_desc good[] = { mk((uintptr_t)hdr, 16, N, 1), mk((uintptr_t)data, 512, W | N, 2),
                                 mk((uintptr_t)status, 1, W, 0) };
    indirect_case("indirect table length 40 (not a multiple of 16)", good, 3, t, 40, status, false);
    indirect_case("indirect table of length 0", good, 3, t, 0, status, false);
    indirect_case("indirect table at 0xf0000000 (no RAM)", good, 0, 0xf0000000u, 48, status, false);
    indirect_case("indirect table straddling the end of RAM", good, 0, ram_top - 32, 48, status, false);

    struct vring_desc next_out[] = { mk((uintptr_t)hdr, 16, N, 1), mk((uintptr_t)data, 512, W | N, 7),
                                     mk((uintptr_t)status, 1, W, 0) };
    indirect_case("next beyond the end of the indirect table", next_out, 3, t, 48, status, false);

    struct vring_desc loop[] = { mk((uintptr_t)hdr, 16, N, 1), mk((uintptr_t)data, 512, W | N, 2),
                                 mk((uintptr_t)data + 512, 512, W | N, 1) };
    indirect_case("loop inside an indirect table", loop, 3, t, 48, NULL, false);
}

static void bad_rings(void)
{
    uint16_t size = victim->v.vq.size;
    struct {
        const char *name;
        struct vq_placement at;
    } cases[] = {
        { "descriptor table at 0xf0000000 (no RAM)", { .desc = 0xf0000000u } },
        { "descriptor table above 4 GiB (high dword set)", { .desc = 0x1000000000ull } },
        { "descriptor table straddling the end of RAM", { .desc = ram_top - 8 * size } },
        { "avail ring straddling the end of RAM", { .driver = ram_top - size } },
        { "used ring just past the end of RAM", { .device = ram_top } },
        { "used ring at 2^64-4096 (wraps)", { .device = 0xfffffffffffff000ull } },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        victim->slot_busy = 0;
        int r = virtio_start(&victim->v, 1ull << VIRTIO_F_INDIRECT_DESC, &cases[i].at);
        enum outcome o = O_START;
        uint32_t len = 0;
        if (r == 0) {
            prepare(VIRTIO_BLK_T_IN);
            set_desc(0, (uintptr_t)hdr, 16, N, 1);
            set_desc(1, (uintptr_t)data, 512, W | N, 2);
            set_desc(2, (uintptr_t)status, 1, W, 0);
            o = run(status, &len);
        } else if (r != -3) {
            printf("  setup returned %d\n", r);
        }
        judge(cases[i].name, o, len, true, NULL, false);
    }
}

void test_main(void)
{
    virtio_irq_init();
    dma_reset();
    hdr = dma_alloc(64, 64);
    status = dma_alloc(64, 64);
    data = dma_alloc(8192, 4096), rt_w = dma_alloc(512, 512), rt_r = dma_alloc(512, 512);
    table = dma_alloc(4096, 4096), table2 = dma_alloc(4096, 4096);
    ram_top = ram_end();
    lenient = arg_u64("lenient", 0);
    printf("end of RAM: %x\n", (uint32_t)ram_top);
    pci_ecam_init();
    unsigned ndevs = pci_scan(devs, PCI_MAX_DEVS), idx[4];
    check(pci_relocate(devs, ndevs, is_blk, 0xc0000000u, 0xe0000000u) > 0, "virtio-blk BARs relocated");
    unsigned n = blk_find(devs, ndevs, idx, 4);
    for (unsigned i = 0; i < n && i < 2; i++) {
        struct blk *b = &disks[i];
        if (blk_open(b, &devs[idx[i]], i, 1ull << VIRTIO_F_INDIRECT_DESC))
            continue;
        if (!strncmp(b->serial, "rw0", 4))
            victim = b;
        else if (!strncmp(b->serial, "rw1", 4))
            other = b;
    }
    if (!victim || !other || victim == other) {
        fail("need two virtio-blk disks with serials rw0 and rw1 (found %u devices)", n);
        return;
    }
    check(round_trip(victim, 0) && round_trip(other, 0), "rw0 and rw1 work before the cases");
    bad_addresses();
    bad_chains();
    bad_indirect();
    bad_rings();
    check(round_trip(victim, 63) && round_trip(other, 63), "rw0 and rw1 still work after %u cases", ncase);
}
