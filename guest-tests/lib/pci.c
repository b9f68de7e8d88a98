/* PCI configuration space on bus 0: ports 0xCF8/0xCFC (mechanism #1) or ECAM from MCFG,
 * enumeration, BAR sizing, capabilities and BAR relocation. */
#include "pci.h"

#define PCI_ADDR_PORT 0xcf8
#define PCI_DATA_PORT 0xcfc
#define BAR0          0x10

static enum pci_access cur_access = PCI_PORTS;
static uint32_t ecam_base, ecam_size;

uint32_t pci_ecam_init(void)
{
    const uint8_t *t = acpi_find("MCFG");
    ecam_base = ecam_size = 0;
    if (!t)
        return 0;
    uint32_t len;
    memcpy(&len, t + 4, 4);
    for (uint32_t off = 44; off + 16 <= len; off += 16) {
        uint64_t base;
        uint16_t seg;
        memcpy(&base, t + off, 8), memcpy(&seg, t + off + 8, 2);
        uint8_t start = t[off + 10], end = t[off + 11];
        if (seg != 0 || start != 0 || base >> 32 || end < start)
            continue;
        ecam_base = (uint32_t)base;
        ecam_size = ((uint32_t)end - start + 1) << 20;
        return ecam_base;
    }
    return 0;
}

void pci_set_access(enum pci_access a)
{
    cur_access = a;
}

uint32_t pci_read_raw(enum pci_access a, uint8_t dev, uint8_t fn, uint16_t off, unsigned width)
{
    uint32_t where = (uint32_t)dev << 15 | (uint32_t)fn << 12 | off;
    if (a == PCI_ECAM) {
        if (!ecam_base || off >= 4096)
            return width == 4 ? 0xffffffff : width == 2 ? 0xffff : 0xff;
        uintptr_t p = ecam_base + where;
        if (width == 1)
            return *(volatile uint8_t *)p;
        if (width == 2)
            return *(volatile uint16_t *)p;
        return *(volatile uint32_t *)p;
    }
    if (off >= 256)
        return width == 4 ? 0xffffffff : width == 2 ? 0xffff : 0xff;
    outl(PCI_ADDR_PORT, 0x80000000u | (uint32_t)dev << 11 | (uint32_t)fn << 8 | (off & 0xfc));
    if (width == 1)
        return inb(PCI_DATA_PORT + (off & 3));
    if (width == 2)
        return inw(PCI_DATA_PORT + (off & 2));
    return inl(PCI_DATA_PORT);
}

void pci_write_raw(enum pci_access a, uint8_t dev, uint8_t fn, uint16_t off, unsigned width, uint32_t v)
{
    uint32_t where = (uint32_t)dev << 15 | (uint32_t)fn << 12 | off;
    if (a == PCI_ECAM) {
        if (!ecam_base || off >= 4096)
            return;
        uintptr_t p = ecam_base + where;
        if (width == 1)
            *(volatile uint8_t *)p = (uint8_t)v;
        else if (width == 2)
            *(volatile uint16_t *)p = (uint16_t)v;
        else
            *(volatile uint32_t *)p = v;
        return;
    }
    if (off >= 256)
        return;
    outl(PCI_ADDR_PORT, 0x80000000u | (uint32_t)dev << 11 | (uint32_t)fn << 8 | (off & 0xfc));
    if (width == 1)
        outb(PCI_DATA_PORT + (off & 3), (uint8_t)v);
    else if (width == 2)
        outw(PCI_DATA_PORT + (off & 2), (uint16_t)v);
    else
        outl(PCI_DATA_PORT, v);
}

uint32_t pci_read32(const struct pci_dev *d, uint16_t off)
{
    return pci_read_raw(cur_access, d->dev, d->fn, off, 4);
}
uint16_t pci_read16(const struct pci_dev *d, uint16_t off)
{
    return (uint16_t)pci_read_raw(cur_access, d->dev, d->fn, off, 2);
}
uint8_t pci_read8(const struct pci_dev *d, uint16_t off)
{
    return (uint8_t)pci_read_raw(cur_access, d->dev, d->fn, off, 1);
}
void pci_write32(const struct pci_dev *d, uint16_t off, uint32_t v)
{
    pci_write_raw(cur_access, d->dev, d->fn, off, 4, v);
}
void pci_write16(const struct pci_dev *d, uint16_t off, uint16_t v)
{
    pci_write_raw(cur_access, d->dev, d->fn, off, 2, v);
}
void pci_write8(const struct pci_dev *d, uint16_t off, uint8_t v)
{
    pci_write_raw(cur_access, d->dev, d->fn, off, 1, v);
}

unsigned pci_size_bar(struct pci_dev *d, unsigned i)
{
    struct pci_bar *b = &d->bar[i];
    uint16_t reg = (uint16_t)(BAR0 + 4 * i);
    uint32_t orig = pci_read32(d, reg);
    *b = (struct pci_bar){ 0 };
    pci_write32(d, reg, 0xffffffff);
    uint32_t lo = pci_read32(d, reg);
    pci_write32(d, reg, orig);
    if (orig & 1) { /* I/O: the upper 16 bits may be hardwired to 0 */
        uint32_t m = lo & ~3u;
        if (!m)
            return 1;
        if (!(m & 0xffff0000))
            m |= 0xffff0000;
        b->io = true, b->base = orig & ~3u, b->size = (uint32_t)(~m + 1);
        return 1;
    }
    b->mem64 = ((orig >> 1) & 3) == 2 && i < 5;
    b->prefetch = orig & 8;
    uint64_t mask = lo & ~0xfu, base = orig & ~0xfu;
    if (b->mem64) {
        uint16_t hreg = (uint16_t)(reg + 4);
        uint32_t horig = pci_read32(d, hreg);
        pci_write32(d, hreg, 0xffffffff);
        mask |= (uint64_t)pci_read32(d, hreg) << 32;
        pci_write32(d, hreg, horig);
        base |= (uint64_t)horig << 32;
    } else {
        mask |= 0xffffffff00000000ull;
    }
    if ((uint32_t)mask == 0) /* nothing implemented in the low half */
        return b->mem64 ? 2 : 1;
    b->base = base, b->size = ~mask + 1;
    return b->mem64 ? 2 : 1;
}

static void probe_fn(struct pci_dev *d)
{
    uint32_t id = pci_read32(d, 0), cls = pci_read32(d, 8);
    d->vendor = (uint16_t)id, d->device = (uint16_t)(id >> 16);
    d->class = (uint8_t)(cls >> 24), d->subclass = (uint8_t)(cls >> 16), d->prog_if = (uint8_t)(cls >> 8);
    d->header_type = pci_read8(d, 0x0e);
    unsigned nbars = (d->header_type & 0x7f) == 0 ? 6 : (d->header_type & 0x7f) == 1 ? 2 : 0;
    uint16_t cmd = pci_read16(d, PCI_CMD);
    if (nbars)
        pci_write16(d, PCI_CMD, cmd & (uint16_t) ~(PCI_CMD_IO | PCI_CMD_MEM));
    for (unsigned i = 0; i < nbars;)
        i += pci_size_bar(d, i);
    if (nbars)
        pci_write16(d, PCI_CMD, cmd);
}

unsigned pci_scan(struct pci_dev *devs, unsigned max)
{
    unsigned n = 0;
    for (uint8_t dev = 0; dev < 32; dev++) {
        for (uint8_t fn = 0; fn < 8; fn++) {
            if ((uint16_t)pci_read_raw(cur_access, dev, fn, 0, 2) == 0xffff) {
                if (fn == 0)
                    break;
                continue;
            }
            if (n == max)
                return n;
            struct pci_dev *d = &devs[n++];
            *d = (struct pci_dev){ .dev = dev, .fn = fn };
            probe_fn(d);
            if (fn == 0 && !(d->header_type & 0x80))
                break;
        }
    }
    return n;
}

uint8_t pci_find_cap(const struct pci_dev *d, uint8_t id, uint8_t from)
{
    if (!(pci_read16(d, 0x06) & 0x10)) /* status: capability list present */
        return 0;
    uint8_t p = from ? pci_read8(d, from + 1) : pci_read8(d, 0x34);
    for (int budget = 48; p >= 0x40 && budget > 0; budget--) {
        p &= 0xfc;
        if (pci_read8(d, p) == id)
            return p;
        p = pci_read8(d, p + 1);
    }
    return 0;
}

/* ---- relocation ---- */

struct range {
    uint64_t start, end;
};
#define MAX_RANGES (PCI_MAX_DEVS * 6 + MAX_MEM_RANGES + 4)
static struct range busy[MAX_RANGES];
static unsigned nbusy;

static void add_busy(uint64_t start, uint64_t size)
{
    if (size && nbusy < MAX_RANGES)
        busy[nbusy++] = (struct range){ start, start + size };
}

/* The highest naturally aligned spot for size bytes in [lo, hi) that overlaps nothing busy;
 * 0 if there is none. */
static uint32_t place(uint64_t size, uint32_t lo, uint32_t hi)
{
    uint64_t top = hi;
    while (top >= lo + size) {
        uint64_t cand = (top - size) & ~(size - 1);
        if (cand < lo)
            return 0;
        bool clash = false;
        for (unsigned i = 0; i < nbusy; i++) {
            if (cand < busy[i].end && busy[i].start < cand + size) {
                top = busy[i].start; /* below cand + size <= top: the search moves down */
                clash = true;
                break;
            }
        }
        if (!clash)
            return (uint32_t)cand;
    }
    return 0;
}

int pci_relocate(struct pci_dev *devs, unsigned n, bool (*move)(const struct pci_dev *), uint32_t lo,
                 uint32_t hi)
{
    nbusy = 0;
    for (unsigned i = 0; i < boot.nmem; i++)
        add_busy(boot.mem[i].addr, boot.mem[i].size);
    add_busy(ecam_base, ecam_size);
    add_busy(0xfec00000, 0x100000000ull - 0xfec00000); /* IOAPIC, HPET, LAPIC, flash */
    for (unsigned i = 0; i < n; i++)
        for (unsigned b = 0; b < 6; b++)
            if (!devs[i].bar[b].io && devs[i].bar[b].base)
                add_busy(devs[i].bar[b].base, devs[i].bar[b].size);
    int moved = 0;
    for (unsigned i = 0; i < n; i++) {
        struct pci_dev *d = &devs[i];
        if (!move(d))
            continue;
        uint16_t cmd = pci_read16(d, PCI_CMD);
        pci_write16(d, PCI_CMD, cmd & (uint16_t)~PCI_CMD_MEM);
        for (unsigned b = 0; b < 6; b++) {
            struct pci_bar *bar = &d->bar[b];
            if (bar->io || !bar->size)
                continue;
            if (bar->size > 0x10000000 || (bar->size & (bar->size - 1)))
                return -1;
            uint32_t at = place(bar->size, lo, hi);
            if (!at)
                return -1;
            uint16_t reg = (uint16_t)(BAR0 + 4 * b);
            pci_write32(d, reg, at);
            if (bar->mem64)
                pci_write32(d, reg + 4, 0);
            uint32_t got = pci_read32(d, reg) & ~0xfu;
            uint32_t high = bar->mem64 ? pci_read32(d, reg + 4) : 0;
            if (got != at || high)
                return -1;
            bar->base = at;
            add_busy(at, bar->size);
            moved++;
        }
        pci_write16(d, PCI_CMD, (uint16_t)(cmd | PCI_CMD_MEM | PCI_CMD_MASTER | PCI_CMD_INTX_OFF));
    }
    return moved;
}
