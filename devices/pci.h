/* PCI host bridge: bus 0, configuration space through ports 0xCF8/0xCFC and ECAM, memory BARs
 * placed by kvmbox at start (32-bit BARs in the 32-bit window, 64-bit BARs above RAM) and moved
 * wherever the guest programs them. Slots are given in registration order, from 1.
 *
 * MMIO to a BAR reaches the function's ops with an offset into that BAR. BAR lookups take a
 * read lock, so relocating a BAR on one vCPU is safe against accesses on another. */
#ifndef KVMBOX_PCI_H
#define KVMBOX_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct dev_services;
struct pci_host;

#define PCI_CFG_SIZE  256
#define PCI_NUM_BARS  6
#define PCI_MAX_SLOTS 32

/* Standard header offsets and bits used by kvmbox's devices. */
#define PCI_VENDOR_ID            0x00
#define PCI_DEVICE_ID            0x02
#define PCI_COMMAND              0x04
#define PCI_COMMAND_IO           0x1
#define PCI_COMMAND_MEMORY       0x2
#define PCI_COMMAND_MASTER       0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS               0x06
#define PCI_STATUS_INTERRUPT     0x08
#define PCI_STATUS_CAP_LIST      0x10
#define PCI_REVISION_ID          0x08
#define PCI_CLASS_PROG           0x09
#define PCI_HEADER_TYPE          0x0e
#define PCI_BAR0                 0x10
#define PCI_SUBSYSTEM_VENDOR_ID  0x2c
#define PCI_SUBSYSTEM_ID         0x2e
#define PCI_CAPABILITY_LIST      0x34
#define PCI_INTERRUPT_LINE       0x3c
#define PCI_INTERRUPT_PIN        0x3d
#define PCI_CAP_ID_MSIX          0x11
#define PCI_CAP_ID_VNDR          0x09

struct pci_func;

struct pci_func_ops {
    /* Access to BAR number BAR at OFF (the whole access lies inside the BAR). */
    void (*bar_read)(void *dev, unsigned bar, uint64_t off, void *data, unsigned len);
    void (*bar_write)(void *dev, unsigned bar, uint64_t off, const void *data, unsigned len);
    /* BAR BAR now decodes at ADDR (ENABLED), or no longer decodes. Called with the host's
     * configuration lock held; the device re-binds doorbells (ioeventfds) here. */
    void (*bar_map)(void *dev, unsigned bar, uint64_t addr, bool enabled);
    /* The guest wrote LEN bytes at OFF of the configuration space (already stored through
     * the write mask). For capabilities with side effects (MSI-X enable, virtio pci_cfg). */
    void (*cfg_write)(void *dev, struct pci_func *f, unsigned off, unsigned len);
    /* About to read LEN bytes at OFF: lets the device refresh a computed field. */
    void (*cfg_read)(void *dev, struct pci_func *f, unsigned off, unsigned len);
};

struct pci_func {
    uint8_t cfg[PCI_CFG_SIZE];
    uint8_t wmask[PCI_CFG_SIZE];        /* bits the guest may change */
    uint64_t bar_size[PCI_NUM_BARS];    /* 0: not implemented; power of two >= 16 */
    bool bar_64[PCI_NUM_BARS];          /* 64-bit BAR (uses the next slot as its high half) */
    uint64_t bar_addr[PCI_NUM_BARS];    /* where it decodes (when memory decode is on) */
    uint64_t bar_initial[PCI_NUM_BARS]; /* kvmbox's placement, restored on reset */
    bool bar_live[PCI_NUM_BARS];        /* bar_map(enabled) was last called */
    const struct pci_func_ops *ops;
    void *dev;
    unsigned slot;
    uint8_t next_cap; /* where pci_cap_add puts the next capability */
    struct pci_host *host;
};

int pci_host_create(const struct dev_services *svc, uint64_t mmio64_base, uint64_t mmio64_size,
                    struct pci_host **out) __attribute__((warn_unused_result));

/* Fills the standard type-0 header of F. */
void pci_func_init(struct pci_func *f, uint16_t vendor, uint16_t device, uint32_t class_code,
                   uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id,
                   const struct pci_func_ops *ops, void *dev);
/* Declares BAR BAR of SIZE bytes (a power of two, at least 4 KiB here), 64-bit or not. */
void pci_func_bar(struct pci_func *f, unsigned bar, uint64_t size, bool is64);
/* Appends a capability of LEN bytes with ID; returns its offset (0 when it does not fit). The
 * caller fills bytes from offset+2 on and marks their writable bits in f->wmask. */
unsigned pci_cap_add(struct pci_func *f, uint8_t id, unsigned len);
/* Puts F in the next free slot and places its BARs. Returns the slot or -errno. */
int pci_register(struct pci_host *h, struct pci_func *f) __attribute__((warn_unused_result));
/* Legacy INTx level for F (pin A), for guests that do not enable MSI-X. */
void pci_set_intx(struct pci_func *f, bool level);
/* The GSI INTx of SLOT (pin 0 = A) reaches; the DSDT's _PRT says the same. */
unsigned pci_intx_gsi(unsigned slot, unsigned pin);

static inline uint16_t pci_cfg16(const struct pci_func *f, unsigned off)
{
    return (uint16_t)(f->cfg[off] | f->cfg[off + 1] << 8);
}
static inline uint32_t pci_cfg32(const struct pci_func *f, unsigned off)
{
    return (uint32_t)f->cfg[off] | (uint32_t)f->cfg[off + 1] << 8 | (uint32_t)f->cfg[off + 2] << 16 |
           (uint32_t)f->cfg[off + 3] << 24;
}
static inline void pci_set16(struct pci_func *f, unsigned off, uint16_t v)
{
    f->cfg[off] = (uint8_t)v, f->cfg[off + 1] = (uint8_t)(v >> 8);
}
static inline void pci_set32(struct pci_func *f, unsigned off, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        f->cfg[off + i] = (uint8_t)(v >> (8 * i));
}

#endif
