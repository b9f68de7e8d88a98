/* virtio-blk through the modern PCI transport, as a guest driver sees it.
 *
 * PCI: bus 0 through ports 0xCF8/0xCFC and through ECAM (MCFG) must agree; every memory BAR
 * of every virtio-blk function is moved to a new, naturally aligned address in
 * 0xC0000000-0xDFFFFFFF (ECAM writes), and the device must answer there.
 *
 * Disks are told apart by their GET_ID serial: "rw<N>" is a read-write disk, "ro<N>" one
 * that must be read-only. Command line: disks=N (how many the host attached; 0: any).
 *
 * rw disks: configuration (capacity >= 2048 sectors, blk_size, seg_max, RO clear), then
 * whole-disk write + read-back passes, each with its own generation of the pattern below:
 *   without indirect/EVENT_IDX, a queue of 128 entries (if the device offers more):
 *                               4 KiB QD1 polled; 512 B at full depth (interrupts);
 *                               64 KiB as 16 segments at full depth (interrupts)
 *   with both (reset, renegotiated, the largest queue up to 256): 64 KiB as 4 segments QD1;
 *                               the largest request seg_max
 *                               and size_max allow (4 KiB segments, at most 1 MiB) at full
 *                               depth (interrupts); 4 KiB as 8 segments at full depth, polled,
 *                               generation 0 = the final pattern, compared byte for byte
 * then FLUSH, DISCARD (reads must not return the old data), WRITE_ZEROES (reads return
 * zeroes), an unknown request type (UNSUPP), reads and writes at and across the end
 * (IOERR, last sector unchanged). Completions in interrupt passes must raise MSI-X
 * interrupts. At the end every rw disk is read again (each must still hold its own
 * pattern) and flushed.
 * ro disks: RO set, the host's pattern reads back, writes (and DISCARD/WRITE_ZEROES if
 * offered) fail with an error status and change nothing.
 *
 * FINAL STATE (checked by tests/t-virtio-blk.sh), 512-byte sectors s:
 *   rw disk with serial S: seed = FNV-1a 64 of S (offset 0xcbf29ce484222325, prime
 *   0x100000001b3); v = (s * 0x9E3779B97F4A7C15 mod 2^64) ^ seed;
 *   bytes 0-7 = v (little-endian), bytes 8-503 = 0xA5, bytes 504-511 = ~v (little-endian),
 *   except sectors 1024-1279 (DISCARDed: anything but the pattern if the guest printed
 *   "DISCARDED ...", else the pattern) and sectors 1536-1791 (WRITE_ZEROES: all zeroes).
 *   ro disk (prepared by the host): bytes 0-7 = s ^ 0x5A5A5A5A5A5A5A5A (little-endian),
 *   bytes 8-511 = 0x5A; unchanged by the run. */
#include "virtio.h"

#define FILL          0xa5
#define MULT          0x9E3779B97F4A7C15ull
#define GEN_MULT      0xD6E8FEB86659FD93ull
#define RO_XOR        0x5A5A5A5A5A5A5A5Aull
#define DISCARD_FIRST 1024
#define ZEROES_FIRST  1536
#define RANGE_COUNT   256
#define MIN_SECTORS   2048
#define WIN_BYTES     (4u << 20)
#define TIMEOUT_US    5000000
#define MAX_DISKS     VIRTIO_MAX_DEVS

static struct pci_dev devs[PCI_MAX_DEVS];
static unsigned ndevs;
static struct blk disks[MAX_DISKS];
static uint8_t *wbuf, *rbuf;  /* WIN_BYTES each: what passes write, what they read */
static uint8_t *zeroes, *tmp; /* RANGE_COUNT sectors of zeroes; 64 KiB for single requests */

static inline void put64(uint8_t *p, uint64_t v)
{
    *(uint64_t *)p = v;
}
static inline uint64_t get64(const uint8_t *p)
{
    return *(const uint64_t *)p;
}

static void fill32(void *p, uint32_t v, uint32_t bytes)
{
    uint32_t n = bytes / 4;
    __asm__ volatile("rep stosl" : "+D"(p), "+c"(n) : "a"(v) : "memory");
}

static bool same(const void *a, const void *b, uint32_t bytes)
{
    uint32_t n = bytes / 4;
    if (!n)
        return true;
    bool eq;
    __asm__ volatile("repe cmpsl" : "+S"(a), "+D"(b), "+c"(n), "=@ccz"(eq) : : "memory");
    return eq;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* ---- patterns ---- */

static uint64_t seed_of(const struct blk *b)
{
    return fnv1a(b->serial);
}

/* Headers and trailers for sectors [first, first + n) of generation gen into buf. */
static void stamp(uint8_t *buf, uint64_t first, uint32_t n, uint64_t seed, uint64_t gen)
{
    uint64_t acc = first * MULT, x = seed ^ gen * GEN_MULT;
    for (uint32_t i = 0; i < n; i++, acc += MULT) {
        put64(buf + 512 * i, acc ^ x);
        put64(buf + 512 * i + 504, ~(acc ^ x));
    }
}

static void poison(uint8_t *buf, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        put64(buf + 512 * i, 0xdeadbeefdeadbeefull);
        put64(buf + 512 * i + 504, 0xdeadbeefdeadbeefull);
    }
}

/* Index of the first sector whose header or trailer is not generation gen's, or n. */
static uint32_t check_stamp(const uint8_t *buf, uint64_t first, uint32_t n, uint64_t seed, uint64_t gen)
{
    uint64_t acc = first * MULT, x = seed ^ gen * GEN_MULT;
    for (uint32_t i = 0; i < n; i++, acc += MULT)
        if (get64(buf + 512 * i) != (acc ^ x) || get64(buf + 512 * i + 504) != ~(acc ^ x))
            return i;
    return n;
}

/* ---- whole-disk passes ---- */

struct pass {
    const char *name;
    uint32_t req, nseg; /* request bytes, data segments (adjusted to the device's limits) */
    unsigned qd;        /* 0: as deep as the queue allows, at most 32 */
    bool irq;
};

struct shape {
    uint32_t req, seg, nseg;
    unsigned qd;
};

static uint32_t max_segs(const struct blk *b)
{
    uint32_t n = b->seg_max ? b->seg_max : 1;
    if (n > BLK_MAX_SEGS)
        n = BLK_MAX_SEGS;
    if (n > (uint32_t)b->v.vq.size - 2)
        n = b->v.vq.size - 2;
    return n;
}

static uint32_t seg_cap(const struct blk *b)
{
    uint32_t c = b->size_max ? b->size_max & ~511u : 1u << 20;
    return c < 512 ? 512 : c;
}

/* Fits a pass to the device: segment size within size_max, count within seg_max, queue
 * depth within the free descriptors. */
static struct shape fit(const struct blk *b, const struct pass *p)
{
    struct shape s = { .req = p->req, .nseg = p->nseg };
    if (!s.req) { /* the largest request: 4 KiB segments (or one big one), at most 1 MiB */
        uint32_t n = max_segs(b), seg = n > 1 ? 4096 : 1u << 20;
        if (seg > seg_cap(b))
            seg = seg_cap(b);
        s.req = n * seg;
        if (s.req > (1u << 20))
            s.req = 1u << 20;
        s.nseg = (s.req + seg - 1) / seg;
    }
    s.seg = s.req / s.nseg;
    while (s.seg > seg_cap(b))
        s.seg /= 2;
    s.seg &= ~511u;
    s.nseg = s.req / s.seg;
    if (s.nseg > max_segs(b)) {
        s.nseg = max_segs(b);
        s.req = s.nseg * s.seg;
    }
    unsigned per = b->use_indirect ? 1 : s.nseg + 2;
    s.qd = p->qd ? p->qd : 32;
    if (s.qd > BLK_MAX_SLOTS)
        s.qd = BLK_MAX_SLOTS;
    if (s.qd > b->v.vq.size / per)
        s.qd = b->v.vq.size / per;
    if (!s.qd)
        s.qd = 1;
    return s;
}

struct stats {
    uint32_t bad_status, bad_len, first_bad_status;
    int error; /* a BLK_STATUS_* that ended the pass */
};

/* Writes (or reads) sectors [first, first + n) from buf with requests of shape s; n*512 <=
 * WIN_BYTES. */
static void io_window(struct blk *b, const struct shape *s, bool write, uint64_t first, uint32_t n,
                      uint8_t *buf, struct stats *st)
{
    static struct vbuf segs[BLK_MAX_SEGS];
    static uint32_t slot_bytes[BLK_MAX_SLOTS];
    uint32_t next = 0, inflight = 0, per = s->req / 512;
    while (next < n || inflight) {
        while (next < n && inflight < s->qd) {
            uint32_t len = (n - next < per ? n - next : per) * 512, k = 0;
            for (uint32_t off = 0; off < len; off += s->seg, k++)
                segs[k] = (struct vbuf){ (uintptr_t)(buf + 512 * next + off),
                                         len - off < s->seg ? len - off : s->seg, !write };
            int slot = blk_submit(b, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, first + next, segs, k);
            if (slot < 0)
                break;
            slot_bytes[slot] = len;
            inflight++, next += len / 512;
        }
        virtio_kick(&b->v);
        int c = blk_complete(b, TIMEOUT_US);
        if (c < 0) {
            st->error = c;
            return;
        }
        inflight--;
        uint8_t status = b->slots[c].status;
        if (status != VIRTIO_BLK_S_OK && !st->bad_status++)
            st->first_bad_status = status;
        if (b->used_len[c] != (write ? 1 : slot_bytes[c] + 1))
            st->bad_len++;
    }
}

static const char *err_name(int e)
{
    return e == BLK_STATUS_TIMEOUT ? "timeout"
           : e == BLK_STATUS_RESET ? "DEVICE_NEEDS_RESET"
                                   : "bogus used id";
}

/* One whole-disk write + read-back pass of generation gen. */
static void run_pass(struct blk *b, const struct pass *p, uint64_t gen)
{
    struct shape s = fit(b, p);
    uint64_t seed = seed_of(b);
    uint32_t win = WIN_BYTES / 512, q0 = irq_count[b->v.vec_q], done0 = b->completions;
    struct stats st = { 0 };
    uint32_t bad_data = 0;
    uint64_t bad_sector = 0;
    virtio_set_irq(&b->v, p->irq);
    uint64_t t0 = clock_us();
    for (uint64_t first = 0; first < b->capacity && !st.error; first += win) {
        uint32_t n = b->capacity - first < win ? (uint32_t)(b->capacity - first) : win;
        stamp(wbuf, first, n, seed, gen);
        io_window(b, &s, true, first, n, wbuf, &st);
        if (st.error)
            break;
        poison(rbuf, n);
        io_window(b, &s, false, first, n, rbuf, &st);
        if (st.error)
            break;
        uint32_t i = check_stamp(rbuf, first, n, seed, gen);
        if (i < n && !bad_data++)
            bad_sector = first + i;
        if (gen == 0 && i == n && !same(rbuf, wbuf, n * 512) && !bad_data++)
            bad_sector = first;
    }
    uint32_t ms = (uint32_t)((clock_us() - t0) / 1000);
    /* Completions found by polling may have left their interrupt on its way (the device's
     * I/O thread raises it): wait for one if none came yet. Not a guess of the host's speed
     * (a busy host delays it by whole seconds): it ends when the interrupt does, and the 30 s
     * only bound a device that never raises one. */
    if (p->irq && irq_count[b->v.vec_q] == q0)
        irq_window(b->v.vec_q, 30000000);
    uint32_t irqs = irq_count[b->v.vec_q] - q0, reqs = b->completions - done0;
    virtio_set_irq(&b->v, false);
    const char *name = b->serial;
    if (st.error) {
        fail("%s %s: %s after %u requests", name, p->name, err_name(st.error), reqs);
        if (blk_restart(b))
            fail("%s: restart after the failure did not work", name);
        return;
    }
    check(!st.bad_status && !bad_data, "%s %s (%u B x %u segs, QD %u, %s): %u requests in %u ms, data %s%s",
          name, p->name, s.req, s.nseg, s.qd, p->irq ? "irq" : "polled", reqs, ms, bad_data ? "WRONG" : "ok",
          st.bad_status ? ", bad status" : "");
    if (bad_data)
        printf("  first bad sector %u\n", (uint32_t)bad_sector);
    if (st.bad_status)
        printf("  %u requests failed, first status %u\n", st.bad_status, st.first_bad_status);
    check(!st.bad_len, "%s %s: used lengths are data + status for reads, 1 for writes (%u wrong)", name,
          p->name, st.bad_len);
    /* At most one per completion, plus one a polled request before may have left pending.
     * A device that completes during the notify may leave them all pending until the end
     * (irq_window), where they count as one. */
    if (p->irq)
        check(irqs > 0 && irqs <= reqs + 1, "%s %s: completions raised MSI-X interrupts (%u for %u requests)",
              name, p->name, irqs, reqs);
}

/* ---- single requests ---- */

static int rd(struct blk *b, uint64_t sector, uint8_t *buf, uint32_t n)
{
    return blk_io(b, VIRTIO_BLK_T_IN, sector, buf, n * 512);
}

static int wr(struct blk *b, uint64_t sector, uint8_t *buf, uint32_t n)
{
    return blk_io(b, VIRTIO_BLK_T_OUT, sector, buf, n * 512);
}

static void split_op(struct blk *b, uint32_t type, uint32_t first, uint32_t count, uint32_t max,
                     uint32_t flags, int *status)
{
    *status = 0;
    if (!max)
        max = count;
    for (uint32_t s = first; s < first + count && !*status; s += max)
        *status = blk_range_op(b, type, s, first + count - s < max ? first + count - s : max, flags);
}

static void test_flush_discard_zeroes(struct blk *b)
{
    const char *name = b->serial;
    uint64_t seed = seed_of(b);
    if (virtio_has(&b->v, VIRTIO_BLK_F_FLUSH))
        check(blk_io(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0) == VIRTIO_BLK_S_OK, "%s: FLUSH", name);
    else
        printf("%s: the device does not offer FLUSH\n", name);

    int st;
    if (virtio_has(&b->v, VIRTIO_BLK_F_DISCARD)) {
        split_op(b, VIRTIO_BLK_T_DISCARD, DISCARD_FIRST, RANGE_COUNT, b->max_discard_sectors, 0, &st);
        check(st == VIRTIO_BLK_S_OK, "%s: DISCARD of sectors %u-%u (max %u sectors, alignment %u): status %d",
              name, DISCARD_FIRST, DISCARD_FIRST + RANGE_COUNT - 1, b->max_discard_sectors, b->discard_align,
              st);
        poison(rbuf, RANGE_COUNT);
        st = rd(b, DISCARD_FIRST, rbuf, RANGE_COUNT);
        uint32_t old = 0, zero = 0;
        uint64_t acc = DISCARD_FIRST * MULT;
        for (uint32_t i = 0; i < RANGE_COUNT; i++, acc += MULT) {
            old += get64(rbuf + 512 * i) == (acc ^ seed);
            zero += get64(rbuf + 512 * i) == 0 && get64(rbuf + 512 * i + 504) == 0;
        }
        check(st == VIRTIO_BLK_S_OK && old == 0,
              "%s: discarded sectors no longer read the old data (%u of %u old, %u zero)", name, old,
              RANGE_COUNT, zero);
        printf("DISCARDED serial=%s first=%u count=%u\n", name, DISCARD_FIRST, RANGE_COUNT);
    } else {
        printf("%s: the device does not offer DISCARD\n", name);
    }

    if (virtio_has(&b->v, VIRTIO_BLK_F_WRITE_ZEROES)) {
        uint32_t half = RANGE_COUNT / 2;
        int st2;
        split_op(b, VIRTIO_BLK_T_WRITE_ZEROES, ZEROES_FIRST, half, b->max_wz_sectors, 0, &st);
        split_op(b, VIRTIO_BLK_T_WRITE_ZEROES, ZEROES_FIRST + half, half, b->max_wz_sectors,
                 b->wz_may_unmap ? 1 : 0, &st2);
        check(st == VIRTIO_BLK_S_OK && st2 == VIRTIO_BLK_S_OK,
              "%s: WRITE_ZEROES of sectors %u-%u (second half unmap=%u; max %u sectors): status %d %d", name,
              ZEROES_FIRST, ZEROES_FIRST + RANGE_COUNT - 1, b->wz_may_unmap, b->max_wz_sectors, st, st2);
    } else {
        printf("%s: the device does not offer WRITE_ZEROES: writing zeroes instead\n", name);
        for (uint32_t i = 0; i < RANGE_COUNT; i += 8)
            wr(b, ZEROES_FIRST + i, zeroes, 8);
    }
    fill32(rbuf, 0xeeeeeeee, RANGE_COUNT * 512);
    st = rd(b, ZEROES_FIRST, rbuf, RANGE_COUNT);
    check(st == VIRTIO_BLK_S_OK && same(rbuf, zeroes, RANGE_COUNT * 512),
          "%s: the zeroed range reads as zeroes", name);

    /* The neighbours keep the final pattern. */
    static const uint32_t edge[] = { DISCARD_FIRST - 1, DISCARD_FIRST + RANGE_COUNT, ZEROES_FIRST - 1,
                                     ZEROES_FIRST + RANGE_COUNT };
    bool ok = true;
    for (unsigned i = 0; i < 4; i++) {
        poison(rbuf, 1);
        ok = ok && rd(b, edge[i], rbuf, 1) == VIRTIO_BLK_S_OK && check_stamp(rbuf, edge[i], 1, seed, 0) == 1;
    }
    check(ok, "%s: sectors next to the discarded and zeroed ranges are untouched", name);
}

static void test_edges(struct blk *b)
{
    const char *name = b->serial;
    uint64_t cap = b->capacity, seed = seed_of(b);
    check(rd(b, cap, rbuf, 1) == VIRTIO_BLK_S_IOERR, "%s: reading sector %u (= capacity) fails with IOERR",
          name, (uint32_t)cap);
    check(rd(b, cap - 1, rbuf, 2) == VIRTIO_BLK_S_IOERR, "%s: a read across the end fails with IOERR", name);
    check(rd(b, 0xffffffffffffff00ull, rbuf, 1) == VIRTIO_BLK_S_IOERR,
          "%s: a read at sector 2^64-256 fails with IOERR", name);
    fill32(tmp, 0x77777777, 1024);
    check(wr(b, cap - 1, tmp, 2) == VIRTIO_BLK_S_IOERR, "%s: a write across the end fails with IOERR", name);
    check(wr(b, cap, tmp, 1) == VIRTIO_BLK_S_IOERR, "%s: a write at the capacity fails with IOERR", name);
    poison(rbuf, 1);
    check(rd(b, cap - 1, rbuf, 1) == VIRTIO_BLK_S_OK && check_stamp(rbuf, cap - 1, 1, seed, 0) == 1,
          "%s: the last sector is unchanged by the refused writes", name);
    check(blk_io(b, 0x7f, 0, rbuf, 512) == VIRTIO_BLK_S_UNSUPP, "%s: an unknown request type gets UNSUPP",
          name);
}

/* ---- per-disk suites ---- */

static void rw_suite(struct blk *b, struct pci_dev *p, unsigned index)
{
    static const struct pass plain[] = {
        { "4K-qd1", 4096, 1, 1, false },
        { "512-qdmax", 512, 1, 0, true },
        { "64K-16seg-qdmax", 65536, 16, 0, true },
    };
    static const struct pass fancy[] = {
        { "64K-4seg-qd1", 65536, 4, 1, true },
        { "largest-qdmax", 0, 0, 0, true },
        { "4K-8seg-qdmax-final", 4096, 8, 0, false },
    };
    const char *name = b->serial;
    check(b->capacity >= MIN_SECTORS, "%s: capacity %u sectors (at least %u)", name, (uint32_t)b->capacity,
          MIN_SECTORS);
    if (b->capacity < MIN_SECTORS)
        return;
    check(!b->ro, "%s: VIRTIO_BLK_F_RO is clear on a read-write disk", name);
    check(b->blk_size >= 512 && !(b->blk_size & (b->blk_size - 1)), "%s: blk_size %u", name, b->blk_size);
    check(!virtio_has(&b->v, VIRTIO_BLK_F_SEG_MAX) || b->seg_max >= 1,
          "%s: seg_max %u, size_max %u, queue %u (max %u)", name, b->seg_max, b->size_max, b->v.vq.size,
          b->v.max_queue_size);
    uint64_t gen = 1;
    for (unsigned i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        if (plain[i].req < b->blk_size) {
            printf("%s %s: skipped, blk_size is %u\n", name, plain[i].name, b->blk_size);
            continue;
        }
        run_pass(b, &plain[i], gen++);
    }
    uint64_t want = 1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX;
    int r = blk_open(b, p, index, want);
    check(r == 0, "%s: reset and renegotiated with INDIRECT_DESC %s, EVENT_IDX %s, queue %u (%d)", name,
          virtio_has(&b->v, VIRTIO_F_INDIRECT_DESC) ? "on" : "not offered",
          virtio_has(&b->v, VIRTIO_F_EVENT_IDX) ? "on" : "not offered", b->v.vq.size, r);
    if (r)
        return;
    for (unsigned i = 0; i < sizeof(fancy) / sizeof(fancy[0]); i++)
        run_pass(b, &fancy[i], i + 1 == sizeof(fancy) / sizeof(fancy[0]) ? 0 : gen++);
    test_flush_discard_zeroes(b);
    test_edges(b);
}

static void ro_suite(struct blk *b)
{
    const char *name = b->serial;
    check(b->ro, "%s: VIRTIO_BLK_F_RO is set on a read-only disk", name);
    check(b->capacity > 0, "%s: capacity %u sectors", name, (uint32_t)b->capacity);
    uint32_t win = WIN_BYTES / 512, bad = 0, st = 0;
    uint64_t bad_at = 0, cap = b->capacity;
    for (uint64_t first = 0; first < cap; first += win) {
        uint32_t n = cap - first < win ? (uint32_t)(cap - first) : win;
        for (uint32_t i = 0; i < n; i += 128) {
            uint32_t k = n - i < 128 ? n - i : 128;
            poison(rbuf + 512 * i, k);
            st |= (uint32_t)rd(b, first + i, rbuf + 512 * i, k);
        }
        for (uint32_t i = 0; i < n; i++)
            if ((get64(rbuf + 512 * i) != ((first + i) ^ RO_XOR) || get64(rbuf + 512 * i + 504) != RO_XOR) &&
                !bad++)
                bad_at = first + i;
    }
    fill32(tmp, 0x5a5a5a5a, 512);
    put64(tmp, RO_XOR);
    check(!st && !bad && same(rbuf, tmp, 512),
          "%s: the host's pattern reads back (%u sectors wrong, first %u)", name, bad, (uint32_t)bad_at);
    fill32(tmp, 0x11111111, 512);
    int w0 = wr(b, 0, tmp, 1), w1 = wr(b, cap - 1, tmp, 1);
    check(w0 != VIRTIO_BLK_S_OK && w0 >= 0 && w1 != VIRTIO_BLK_S_OK && w1 >= 0,
          "%s: writes are refused (status %d %d)", name, w0, w1);
    if (virtio_has(&b->v, VIRTIO_BLK_F_DISCARD))
        check((st = (uint32_t)blk_range_op(b, VIRTIO_BLK_T_DISCARD, 0, 8, 0)) != VIRTIO_BLK_S_OK,
              "%s: DISCARD is refused (status %d)", name, (int)st);
    if (virtio_has(&b->v, VIRTIO_BLK_F_WRITE_ZEROES))
        check((st = (uint32_t)blk_range_op(b, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0)) != VIRTIO_BLK_S_OK,
              "%s: WRITE_ZEROES is refused (status %d)", name, (int)st);
    poison(rbuf, 8);
    bool ok = rd(b, 0, rbuf, 8) == VIRTIO_BLK_S_OK;
    for (uint32_t i = 0; i < 8; i++)
        ok = ok && get64(rbuf + 512 * i) == (i ^ RO_XOR);
    poison(rbuf, 1);
    ok = ok && rd(b, cap - 1, rbuf, 1) == VIRTIO_BLK_S_OK && get64(rbuf) == ((cap - 1) ^ RO_XOR);
    check(ok, "%s: content unchanged after the refused writes", name);
}

/* Every rw disk still holds its own final pattern (no request went to the wrong disk). */
static void final_verify(struct blk *b)
{
    uint64_t seed = seed_of(b), cap = b->capacity;
    uint32_t bad = 0, st = 0, win = WIN_BYTES / 512;
    for (uint64_t first = 0; first < cap; first += win) {
        uint32_t n = cap - first < win ? (uint32_t)(cap - first) : win;
        for (uint32_t i = 0; i < n; i += 128) {
            uint32_t k = n - i < 128 ? n - i : 128;
            poison(rbuf + 512 * i, k);
            st |= (uint32_t)rd(b, first + i, rbuf + 512 * i, k);
        }
        for (uint32_t i = 0; i < n; i++) {
            uint64_t s = first + i;
            if ((s >= DISCARD_FIRST && s < DISCARD_FIRST + RANGE_COUNT) ||
                (s >= ZEROES_FIRST && s < ZEROES_FIRST + RANGE_COUNT))
                continue;
            bad += check_stamp(rbuf + 512 * i, s, 1, seed, 0) != 1;
        }
    }
    check(!st && !bad, "%s: at the end the disk holds its own pattern (%u sectors wrong)", b->serial, bad);
    /* The host checks the image after the VM is gone: make the writes durable first (QEMU's
     * debug-exit, for one, exits without writing back qcow2 metadata). */
    if (virtio_has(&b->v, VIRTIO_BLK_F_FLUSH))
        check(blk_io(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0) == VIRTIO_BLK_S_OK, "%s: final FLUSH", b->serial);
}

/* ---- PCI ---- */

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static void test_pci(void)
{
    uint32_t ecam = pci_ecam_init();
    check(ecam != 0, "MCFG gives ECAM at %x", ecam);
    pci_set_access(PCI_PORTS);
    ndevs = pci_scan(devs, PCI_MAX_DEVS);
    unsigned agree = 0;
    for (unsigned i = 0; i < ndevs; i++) {
        const struct pci_dev *d = &devs[i];
        bool same_id = true;
        for (uint16_t off = 0; off < 0x40; off += 4) {
            if (off == 0x04) /* status bits may change between the reads */
                continue;
            same_id = same_id && pci_read_raw(PCI_PORTS, d->dev, d->fn, off, 4) ==
                                     pci_read_raw(PCI_ECAM, d->dev, d->fn, off, 4);
        }
        agree += same_id;
        printf("pci 00:%02x.%x %04x:%04x class %02x%02x", d->dev, d->fn, d->vendor, d->device, d->class,
               d->subclass);
        for (unsigned b = 0; b < 6; b++)
            if (d->bar[b].size)
                printf(" bar%u=%x+%x%s", b, (uint32_t)d->bar[b].base, (uint32_t)d->bar[b].size,
                       d->bar[b].io      ? "io"
                       : d->bar[b].mem64 ? "m64"
                                         : "m32");
        printf("\n");
    }
    check(ndevs > 0 && agree == ndevs, "%u PCI functions; ports and ECAM agree on the first 64 bytes of %u",
          ndevs, agree);
    if (ecam)
        pci_set_access(PCI_ECAM); /* move the BARs with ECAM writes, check them through the ports */
    int moved = pci_relocate(devs, ndevs, is_blk, 0xc0000000u, 0xe0000000u);
    pci_set_access(PCI_PORTS);
    bool readback = true;
    for (unsigned i = 0; i < ndevs; i++) {
        if (!is_blk(&devs[i]))
            continue;
        for (unsigned b = 0; b < 6; b++)
            if (devs[i].bar[b].size && !devs[i].bar[b].io)
                readback = readback &&
                           (pci_read32(&devs[i], 0x10 + 4 * b) & ~0xfu) == (uint32_t)devs[i].bar[b].base;
    }
    check(moved > 0 && readback,
          "moved %d virtio-blk memory BARs into 0xc0000000-0xdfffffff; the ports read them back", moved);
}

void test_main(void)
{
    virtio_irq_init();
    dma_reset();
    wbuf = dma_alloc(WIN_BYTES, 4096);
    rbuf = dma_alloc(WIN_BYTES, 4096);
    zeroes = dma_alloc(RANGE_COUNT * 512, 4096);
    tmp = dma_alloc(65536, 4096);
    if (!wbuf || !rbuf || !zeroes || !tmp) {
        fail("not enough guest RAM for the buffers above 4 MiB");
        return;
    }
    test_pci();
    unsigned idx[MAX_DISKS], want = (unsigned)arg_u64("disks", 0);
    unsigned n = blk_find(devs, ndevs, idx, MAX_DISKS);
    if (want)
        check(n == want, "%u virtio-blk devices found, %u expected", n, want);
    else
        check(n > 0, "%u virtio-blk devices found", n);
    /* Filled once: stamps change only headers and trailers. */
    fill32(wbuf, 0xa5a5a5a5, WIN_BYTES);
    fill32(zeroes, 0, RANGE_COUNT * 512);
    unsigned nrw = 0;
    for (unsigned i = 0; i < n; i++) {
        struct blk *b = &disks[i];
        int r = blk_open_queue(b, &devs[idx[i]], i, 0, 128); /* a smaller queue than offered, at first */
        const char *s = b->serial;
        bool rw = s[0] == 'r' && s[1] == 'w' && s[2] >= '0' && s[2] <= '9';
        bool ro = s[0] == 'r' && s[1] == 'o' && s[2] >= '0' && s[2] <= '9';
        check(r == 0 && (rw || ro), "disk %u (00:%02x.%x): started, GET_ID serial '%s' (%d)", i,
              devs[idx[i]].dev, devs[idx[i]].fn, s, r);
        if (r)
            continue;
        printf("%s: capacity %u sectors, features %x:%x, MSI-X %u vectors, queue %u\n", s,
               (uint32_t)b->capacity, (uint32_t)(b->v.offered >> 32), (uint32_t)b->v.offered, b->v.msix_n,
               b->v.vq.size);
        check(b->v.msix_n >= 2, "%s: MSI-X with %u vectors (config + queue)", s, b->v.msix_n);
        check(virtio_common16(&b->v, 0x12) >= 1, "%s: the moved BAR answers: num_queues %u", s,
              virtio_common16(&b->v, 0x12));
        if (rw) {
            rw_suite(b, &devs[idx[i]], i);
            nrw++;
        } else if (ro) {
            ro_suite(b);
        }
    }
    for (unsigned i = 0; i < n; i++)
        if (disks[i].serial[0] == 'r' && disks[i].serial[1] == 'w' && disks[i].capacity >= MIN_SECTORS)
            final_verify(&disks[i]);
    printf("interrupts: tick %u", irq_count[VIRTIO_VEC_TICK]);
    for (unsigned i = 0; i < n; i++)
        printf(", %s config %u queue %u", disks[i].serial, irq_count[disks[i].v.vec_cfg],
               irq_count[disks[i].v.vec_q]);
    printf("\n");
}
