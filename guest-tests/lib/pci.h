/* PCI on bus 0 as a guest driver sees it: configuration space through the 0xCF8/0xCFC ports
 * or through ECAM (base from the ACPI MCFG table), enumeration, BAR sizing, the capability
 * list, and moving a device's memory BARs to addresses the driver picks. 32-bit, paging off:
 * every BAR this code assigns lies below 4 GiB. */
#ifndef GT_PCI_H
#define GT_PCI_H

#include "gt.h"

enum pci_access { PCI_PORTS, PCI_ECAM };

#define PCI_MAX_DEVS     32
#define PCI_CMD          0x04
#define PCI_CMD_IO       0x1
#define PCI_CMD_MEM      0x2
#define PCI_CMD_MASTER   0x4
#define PCI_CMD_INTX_OFF 0x400
#define PCI_CAP_MSIX     0x11
#define PCI_CAP_VENDOR   0x09

struct pci_bar {
    uint64_t base, size; /* size 0: not implemented (or the upper half of a 64-bit BAR) */
    bool io, mem64, prefetch;
};

struct pci_dev {
    uint8_t dev, fn; /* bus 0 only */
    uint16_t vendor, device;
    uint8_t class, subclass, prog_if, header_type;
    struct pci_bar bar[6];
};

/* Finds ECAM through MCFG (segment 0, bus 0 in range). Returns its base, 0 if there is none;
 * after that PCI_ECAM accesses fail (read all-ones, writes dropped). */
uint32_t pci_ecam_init(void);
/* The mechanism the pci_dev-based accessors below use (default PCI_PORTS). */
void pci_set_access(enum pci_access a);

/* Raw accessors: width 1, 2 or 4 at an offset aligned to the width (< 256 for ports). */
uint32_t pci_read_raw(enum pci_access a, uint8_t dev, uint8_t fn, uint16_t off, unsigned width);
void pci_write_raw(enum pci_access a, uint8_t dev, uint8_t fn, uint16_t off, unsigned width, uint32_t v);

uint32_t pci_read32(const struct pci_dev *d, uint16_t off);
uint16_t pci_read16(const struct pci_dev *d, uint16_t off);
uint8_t pci_read8(const struct pci_dev *d, uint16_t off);
void pci_write32(const struct pci_dev *d, uint16_t off, uint32_t v);
void pci_write16(const struct pci_dev *d, uint16_t off, uint16_t v);
void pci_write8(const struct pci_dev *d, uint16_t off, uint8_t v);

/* Enumerates bus 0 (all functions of multi-function devices) and sizes every BAR (decode is
 * switched off while a BAR holds all-ones, then the command register is restored). Returns
 * the number of functions stored in devs (at most max). */
unsigned pci_scan(struct pci_dev *devs, unsigned max);
/* Sizes BAR i (0-5) of d into d->bar[i]; returns how many BAR slots it used (1, or 2 for a
 * 64-bit memory BAR). Decode must be off. */
unsigned pci_size_bar(struct pci_dev *d, unsigned i);

/* Offset of the first capability with this ID at or after the one at 'from' (0: start of
 * the list); 0 if none. The walk is bounded, so a looping list ends. */
uint8_t pci_find_cap(const struct pci_dev *d, uint8_t id, uint8_t from);

/* Moves every memory BAR of devs[i] for which move(devs[i]) is true into [lo, hi): naturally
 * aligned, overlapping no BAR of any device in devs, no e820 entry, no ECAM window and no
 * address the BAR held before. Memory decode is off while a BAR changes; afterwards decode,
 * bus mastering and INTx-disable are on. Updates devs[].bar. Returns the number of BARs
 * moved, or -1 if one did not fit or did not read back. */
int pci_relocate(struct pci_dev *devs, unsigned n, bool (*move)(const struct pci_dev *), uint32_t lo,
                 uint32_t hi);

#endif
