/* PCI host bridge: configuration mechanism #1 (ports 0xCF8/0xCFC), ECAM for bus 0, BAR
 * decoding in the PCI windows, and the reset control register at 0xCF9 that shares the
 * configuration ports. */
#include "devices/pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"
#include "vmm/state.h"

#define CF8_ENABLE 0x80000000u
#define RESET_CPU  0x04 /* 0xCF9 bit 2: reset the CPU (RST_CPU); the FADT's value 6 sets it */

struct pci_host {
    const struct dev_services *svc;
    pthread_mutex_t lock;      /* configuration space, the 0xCF8 latch, placement */
    pthread_rwlock_t map_lock; /* BAR decode state, read by every BAR access */
    uint32_t cf8;
    struct pci_func *slots[PCI_MAX_SLOTS];
    struct pci_func bridge;
    uint64_t next32, end32, base64, next64, end64;
};

unsigned pci_intx_gsi(unsigned slot, unsigned pin)
{
    return LAYOUT_PCI_INTX_GSI(slot, pin);
}

/* ---- functions ----------------------------------------------------------------------- */

void pci_func_init(struct pci_func *f, uint16_t vendor, uint16_t device, uint32_t class_code,
                   uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id,
                   const struct pci_func_ops *ops, void *dev)
{
    memset(f, 0, sizeof(*f));
    pci_set16(f, PCI_VENDOR_ID, vendor);
    pci_set16(f, PCI_DEVICE_ID, device);
    f->cfg[PCI_REVISION_ID] = revision;
    f->cfg[PCI_CLASS_PROG] = (uint8_t)class_code;
    f->cfg[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
    f->cfg[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
    pci_set16(f, PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
    pci_set16(f, PCI_SUBSYSTEM_ID, subsys_id);
    /* COMMAND: I/O, memory, bus master, INTx disable are the guest's. */
    pci_set16(f, PCI_COMMAND, 0);
    f->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    f->wmask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
    f->wmask[PCI_INTERRUPT_LINE] = 0xff;
    f->cfg[PCI_INTERRUPT_PIN] = ops ? 1 : 0;
    f->wmask[0x0c] = 0xff; /* cache line size */
    f->ops = ops;
    f->dev = dev;
    f->next_cap = 0x40;
}

void pci_func_bar(struct pci_func *f, unsigned bar, uint64_t size, bool is64)
{
    f->bar_size[bar] = size;
    f->bar_64[bar] = is64;
    unsigned off = PCI_BAR0 + 4 * bar;
    uint64_t mask = ~(size - 1);
    f->cfg[off] = is64 ? 0x04 : 0x00; /* memory, non-prefetchable */
    for (unsigned i = 0; i < 4; i++)
        f->wmask[off + i] = (uint8_t)((mask & 0xfffffff0u) >> (8 * i));
    if (is64)
        for (unsigned i = 0; i < 4; i++)
            f->wmask[off + 4 + i] = (uint8_t)(mask >> (32 + 8 * i));
}

unsigned pci_cap_add(struct pci_func *f, uint8_t id, unsigned len)
{
    unsigned off = f->next_cap;
    if (len < 2 || off + len > PCI_CFG_SIZE)
        return 0;
    f->cfg[off] = id;
    f->cfg[off + 1] = 0;
    /* Link it at the end of the list. */
    if (!(f->cfg[PCI_STATUS] & PCI_STATUS_CAP_LIST)) {
        f->cfg[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
        f->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
    } else {
        unsigned p = f->cfg[PCI_CAPABILITY_LIST];
        while (f->cfg[p + 1])
            p = f->cfg[p + 1];
        f->cfg[p + 1] = (uint8_t)off;
    }
    f->next_cap = (uint8_t)((off + len + 3) & ~3u);
    return off;
}

static uint64_t bar_reg_addr(const struct pci_func *f, unsigned bar)
{
    uint64_t a = pci_cfg32(f, PCI_BAR0 + 4 * bar) & ~0xfULL;
    if (f->bar_64[bar])
        a |= (uint64_t)pci_cfg32(f, PCI_BAR0 + 4 * bar + 4) << 32;
    return a;
}

static void bar_reg_set(struct pci_func *f, unsigned bar, uint64_t addr)
{
    unsigned off = PCI_BAR0 + 4 * bar;
    pci_set32(f, off, (uint32_t)addr | (f->bar_64[bar] ? 0x04 : 0));
    if (f->bar_64[bar])
        pci_set32(f, off + 4, (uint32_t)(addr >> 32));
}

/* Recomputes what each BAR decodes after a COMMAND or BAR write; tells the device about
 * every change. Called with h->lock held. */
static void update_mappings(struct pci_host *h, struct pci_func *f)
{
    bool mem_on = pci_cfg16(f, PCI_COMMAND) & PCI_COMMAND_MEMORY;
    for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
        if (!f->bar_size[b])
            continue;
        uint64_t a = bar_reg_addr(f, b), end;
        bool live = mem_on && a != 0 && !__builtin_add_overflow(a, f->bar_size[b], &end);
        if (live == f->bar_live[b] && (!live || a == f->bar_addr[b]))
            continue;
        pthread_rwlock_wrlock(&h->map_lock);
        bool was = f->bar_live[b];
        f->bar_live[b] = live;
        f->bar_addr[b] = a;
        pthread_rwlock_unlock(&h->map_lock);
        if (was && f->ops && f->ops->bar_map)
            f->ops->bar_map(f->dev, b, 0, false);
        if (live && f->ops && f->ops->bar_map)
            f->ops->bar_map(f->dev, b, a, true);
    }
}

/* ---- configuration space ------------------------------------------------------------- */

static struct pci_func *lookup(struct pci_host *h, unsigned bus, unsigned dev, unsigned fn)
{
    if (bus != 0 || fn != 0 || dev >= PCI_MAX_SLOTS)
        return NULL;
    return h->slots[dev];
}

static void cfg_read(struct pci_host *h, struct pci_func *f, unsigned off, void *data, unsigned len)
{
    if (!f) {
        memset(data, 0xff, len);
        return;
    }
    if (off >= PCI_CFG_SIZE) { /* PCIe extended space: no extended capabilities */
        memset(data, 0, len);
        return;
    }
    if (f->ops && f->ops->cfg_read)
        f->ops->cfg_read(f->dev, f, off, len);
    memcpy(data, &f->cfg[off], len);
}

static void cfg_write(struct pci_host *h, struct pci_func *f, unsigned off, const void *data, unsigned len)
{
    if (!f || off >= PCI_CFG_SIZE)
        return;
    const uint8_t *v = data;
    for (unsigned i = 0; i < len; i++)
        f->cfg[off + i] = (uint8_t)((f->cfg[off + i] & ~f->wmask[off + i]) | (v[i] & f->wmask[off + i]));
    if (off < PCI_BAR0 + 4 * PCI_NUM_BARS && off + len > PCI_COMMAND)
        update_mappings(h, f);
    if (f->ops && f->ops->cfg_write)
        f->ops->cfg_write(f->dev, f, off, len);
}

/* Accesses must be naturally aligned and not cross a dword (as on real chipsets). */
static bool cfg_access_ok(unsigned off, unsigned len)
{
    return (len == 1 || len == 2 || len == 4) && (off & (len - 1)) == 0;
}

static void ecam_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct pci_host *h = dev;
    unsigned reg = off & 0xfff;
    if (!cfg_access_ok(reg, len)) {
        memset(data, 0xff, len);
        return;
    }
    pthread_mutex_lock(&h->lock);
    cfg_read(h, lookup(h, (unsigned)(off >> 20), (off >> 15) & 31, (off >> 12) & 7), reg, data, len);
    pthread_mutex_unlock(&h->lock);
}

static void ecam_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct pci_host *h = dev;
    unsigned reg = off & 0xfff;
    if (!cfg_access_ok(reg, len))
        return;
    pthread_mutex_lock(&h->lock);
    cfg_write(h, lookup(h, (unsigned)(off >> 20), (off >> 15) & 31, (off >> 12) & 7), reg, data, len);
    pthread_mutex_unlock(&h->lock);
}

static const struct dev_ops ecam_ops = { .name = "pci-ecam", .read = ecam_read, .write = ecam_write };

/* Ports 0xCF8-0xCFF: the address latch (dword at 0xCF8), the reset control register (byte
 * at 0xCF9) and the data window 0xCFC-0xCFF. */
static struct pci_func *cf8_target(struct pci_host *h, uint64_t off, unsigned len, unsigned *reg)
{
    *reg = 0;
    if (!(h->cf8 & CF8_ENABLE))
        return NULL;
    *reg = (h->cf8 & 0xfc) + (unsigned)(off - 4);
    if (!cfg_access_ok(*reg, len))
        return NULL;
    return lookup(h, (h->cf8 >> 16) & 0xff, (h->cf8 >> 11) & 31, (h->cf8 >> 8) & 7);
}

static void cf8_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct pci_host *h = dev;
    pthread_mutex_lock(&h->lock);
    unsigned reg;
    if (off == 0 && len == 4)
        memcpy(data, &h->cf8, 4);
    else if (off >= 4) {
        struct pci_func *f = cf8_target(h, off, len, &reg); /* sets reg: call it first */
        cfg_read(h, f, reg, data, len);
    } else
        memset(data, off == 1 && len == 1 ? 0 : 0xff, len);
    pthread_mutex_unlock(&h->lock);
}

static void cf8_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct pci_host *h = dev;
    if (off == 1 && len == 1) {
        if (*(const uint8_t *)data & RESET_CPU)
            h->svc->request_reset(h->svc->ctx);
        return;
    }
    pthread_mutex_lock(&h->lock);
    unsigned reg;
    if (off == 0 && len == 4)
        memcpy(&h->cf8, data, 4);
    else if (off >= 4) {
        struct pci_func *f = cf8_target(h, off, len, &reg);
        if (f)
            cfg_write(h, f, reg, data, len);
    }
    pthread_mutex_unlock(&h->lock);
}

static const struct dev_ops cf8_ops = { .name = "pci-cf8", .read = cf8_read, .write = cf8_write };

/* ---- BAR decoding -------------------------------------------------------------------- */

static struct pci_func *bar_lookup(struct pci_host *h, uint64_t addr, unsigned len, unsigned *bar,
                                   uint64_t *boff)
{
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        struct pci_func *f = h->slots[s];
        if (!f)
            continue;
        for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
            if (!f->bar_live[b] || addr < f->bar_addr[b])
                continue;
            uint64_t o = addr - f->bar_addr[b];
            if (o < f->bar_size[b] && len <= f->bar_size[b] - o) {
                *bar = b, *boff = o;
                return f;
            }
        }
    }
    return NULL;
}

static void window_access(struct pci_host *h, uint64_t base, uint64_t off, void *data, unsigned len,
                          bool write)
{
    unsigned bar;
    uint64_t boff;
    pthread_rwlock_rdlock(&h->map_lock);
    struct pci_func *f = bar_lookup(h, base + off, len, &bar, &boff);
    if (!f || !f->ops)
        write ? (void)0 : (void)memset(data, 0xff, len);
    else if (write)
        f->ops->bar_write(f->dev, bar, boff, data, len);
    else
        f->ops->bar_read(f->dev, bar, boff, data, len);
    pthread_rwlock_unlock(&h->map_lock);
}

static void win32_read(void *dev, uint64_t off, void *data, unsigned len)
{
    window_access(dev, LAYOUT_PCI_MMIO_START, off, data, len, false);
}

static void win32_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    window_access(dev, LAYOUT_PCI_MMIO_START, off, (void *)data, len, true);
}

static void win64_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct pci_host *h = dev;
    window_access(h, h->base64, off, data, len, false);
}

static void win64_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct pci_host *h = dev;
    window_access(h, h->base64, off, (void *)data, len, true);
}

/* The rest of the hole below 4 GiB, up to the I/O APIC: firmware places BARs there. */
static void win32hi_read(void *dev, uint64_t off, void *data, unsigned len)
{
    window_access(dev, LAYOUT_PCI_MMIO_HI_START, off, data, len, false);
}

static void win32hi_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    window_access(dev, LAYOUT_PCI_MMIO_HI_START, off, (void *)data, len, true);
}

static const struct dev_ops win32hi_ops = { .name = "pci-mmio32hi",
                                            .read = win32hi_read,
                                            .write = win32hi_write };
static const struct dev_ops win32_ops = { .name = "pci-mmio32", .read = win32_read, .write = win32_write };
static const struct dev_ops win64_ops = { .name = "pci-mmio64", .read = win64_read, .write = win64_write };

/* ---- registration, reset ------------------------------------------------------------- */

static int place_bars(struct pci_host *h, struct pci_func *f)
{
    for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
        uint64_t size = f->bar_size[b];
        if (!size)
            continue;
        uint64_t *next = f->bar_64[b] ? &h->next64 : &h->next32;
        uint64_t end = f->bar_64[b] ? h->end64 : h->end32;
        uint64_t a = (*next + size - 1) & ~(size - 1);
        if (a < *next || a + size > end || a + size < a)
            return -ENOSPC;
        *next = a + size;
        f->bar_initial[b] = a;
        bar_reg_set(f, b, a);
    }
    return 0;
}

int pci_register(struct pci_host *h, struct pci_func *f)
{
    pthread_mutex_lock(&h->lock);
    int slot = -ENOSPC;
    for (unsigned s = 1; s < PCI_MAX_SLOTS; s++)
        if (!h->slots[s]) {
            slot = (int)s;
            break;
        }
    if (slot > 0) {
        int r = place_bars(h, f);
        if (r < 0) {
            slot = r;
        } else {
            f->slot = (unsigned)slot;
            f->host = h;
            f->cfg[PCI_INTERRUPT_LINE] = (uint8_t)pci_intx_gsi(f->slot, 0);
            /* As firmware would leave it: BARs placed and memory decode on. */
            pci_set16(f, PCI_COMMAND, PCI_COMMAND_MEMORY);
            pthread_rwlock_wrlock(&h->map_lock);
            h->slots[slot] = f;
            pthread_rwlock_unlock(&h->map_lock);
            update_mappings(h, f);
        }
    }
    pthread_mutex_unlock(&h->lock);
    return slot;
}

void pci_set_intx(struct pci_func *f, bool level)
{
    struct pci_host *h = f->host;
    if (!h)
        return;
    if (level && (pci_cfg16(f, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE))
        level = false;
    if (level)
        f->cfg[PCI_STATUS] |= PCI_STATUS_INTERRUPT;
    else
        f->cfg[PCI_STATUS] &= (uint8_t)~PCI_STATUS_INTERRUPT;
    h->svc->irq_line(h->svc->ctx, pci_intx_gsi(f->slot, 0), level);
}

/* Guest reset: configuration space back to how kvmbox placed it. Devices reset their own
 * state through their vm_device entries. */
static void pci_host_reset(void *dev)
{
    struct pci_host *h = dev;
    pthread_mutex_lock(&h->lock);
    h->cf8 = 0;
    for (unsigned s = 1; s < PCI_MAX_SLOTS; s++) {
        struct pci_func *f = h->slots[s];
        if (!f)
            continue;
        for (unsigned b = 0; b < PCI_NUM_BARS; b++)
            if (f->bar_size[b])
                bar_reg_set(f, b, f->bar_initial[b]);
        pci_set16(f, PCI_COMMAND, PCI_COMMAND_MEMORY);
        f->cfg[PCI_STATUS] &= (uint8_t)~PCI_STATUS_INTERRUPT;
        f->cfg[PCI_INTERRUPT_LINE] = (uint8_t)pci_intx_gsi(f->slot, 0);
        update_mappings(h, f);
    }
    pthread_mutex_unlock(&h->lock);
}

static void pci_host_destroy(void *dev)
{
    struct pci_host *h = dev;
    pthread_mutex_destroy(&h->lock);
    pthread_rwlock_destroy(&h->map_lock);
    free(h);
}

static int pci_host_save(void *dev, struct st_writer *w);
static int pci_host_load(void *dev, const struct st_section *s, char *err, size_t errlen);

int pci_host_create(const struct dev_services *svc, uint64_t mmio64_base, uint64_t mmio64_size,
                    struct pci_host **out)
{
    struct pci_host *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->svc = svc;
    pthread_mutex_init(&h->lock, NULL);
    pthread_rwlock_init(&h->map_lock, NULL);
    h->next32 = LAYOUT_PCI_MMIO_START, h->end32 = LAYOUT_PCI_MMIO_END;
    h->base64 = h->next64 = mmio64_base, h->end64 = mmio64_base + mmio64_size;
    /* Slot 0: the host bridge itself (Red Hat's generic PCIe host bridge IDs). */
    pci_func_init(&h->bridge, 0x1b36, 0x0008, 0x060000, 0, 0x1af4, 0x1100, NULL, NULL);
    h->slots[0] = &h->bridge;
    int r = svc->add_device(svc->ctx, "pci-host", h, pci_host_reset, pci_host_destroy);
    if (r < 0) {
        pci_host_destroy(h);
        return r;
    }
    svc->on_save(svc->ctx, h, 1, pci_host_save, pci_host_load, NULL);
    *out = h;
    if ((r = dev_map_pio(svc, PORT_PCI_CONFIG, 8, &cf8_ops, h)) < 0 ||
        (r = dev_map_mmio(svc, LAYOUT_ECAM_BASE, LAYOUT_ECAM_SIZE, &ecam_ops, h)) < 0 ||
        (r = dev_map_mmio(svc, LAYOUT_PCI_MMIO_START, LAYOUT_PCI_MMIO_END - LAYOUT_PCI_MMIO_START, &win32_ops,
                          h)) < 0 ||
        (r = dev_map_mmio(svc, LAYOUT_PCI_MMIO_HI_START, LAYOUT_PCI_MMIO_HI_END - LAYOUT_PCI_MMIO_HI_START,
                          &win32hi_ops, h)) < 0)
        return r;
    return mmio64_size ? dev_map_mmio(svc, mmio64_base, mmio64_size, &win64_ops, h) : 0;
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* Each function's configuration space, by slot ("slotN"). */
static int pci_host_save(void *dev, struct st_writer *w)
{
    struct pci_host *h = dev;
    pthread_mutex_lock(&h->lock);
    st_put_u32(w, "cf8", h->cf8);
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        char name[16];
        snprintf(name, sizeof(name), "slot%u", s);
        if (h->slots[s])
            st_put(w, name, h->slots[s]->cfg, PCI_CFG_SIZE);
    }
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/* Only what the guest could have written (the write masks) is taken from the file, so a
 * hostile file cannot change what a device is or where its capabilities are; then the BARs
 * decode where the guest had put them. */
static int pci_host_load(void *dev, const struct st_section *sec, char *err, size_t errlen)
{
    struct pci_host *h = dev;
    uint64_t cf8;
    int r = st_need_uint(sec, "cf8", UINT32_MAX, &cf8, err, errlen);
    if (r < 0)
        return r;
    pthread_mutex_lock(&h->lock);
    h->cf8 = (uint32_t)cf8;
    for (unsigned s = 0; s < PCI_MAX_SLOTS && r == 0; s++) {
        struct pci_func *f = h->slots[s];
        char name[16];
        uint8_t cfg[PCI_CFG_SIZE];
        snprintf(name, sizeof(name), "slot%u", s);
        uint32_t len;
        if (!f) {
            if (st_field(sec, name, &len))
                r = errf(err, errlen, -EBADMSG, "saved state: PCI slot %u has a device here that it has not",
                         s);
            continue;
        }
        if ((r = st_need(sec, name, cfg, PCI_CFG_SIZE, err, errlen)) < 0)
            break;
        if (memcmp(cfg, f->cfg, 4)) {
            r = errf(err, errlen, -EBADMSG, "saved state: PCI slot %u held another device", s);
            break;
        }
        for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
            f->cfg[i] = (uint8_t)((f->cfg[i] & ~f->wmask[i]) | (cfg[i] & f->wmask[i]));
        f->cfg[PCI_STATUS] = (uint8_t)((f->cfg[PCI_STATUS] & ~PCI_STATUS_INTERRUPT) |
                                       (cfg[PCI_STATUS] & PCI_STATUS_INTERRUPT));
        update_mappings(h, f);
    }
    pthread_mutex_unlock(&h->lock);
    return r;
}
