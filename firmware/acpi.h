/* ACPI tables for the kvmbox PC: RSDP, RSDT, XSDT, FADT, FACS, DSDT, MADT and (with PCI) MCFG. */
#ifndef KVMBOX_ACPI_H
#define KVMBOX_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acpi_config {
    unsigned ncpus; /* one enabled local APIC (x2APIC above 254) entry each, IDs 0..n-1 */
    uint64_t lapic_addr, ioapic_addr;
    uint8_t ioapic_id;
    uint32_t ioapic_gsi_base;
    uint16_t pm1a_evt_port; /* PM1a_EVT_BLK, 4 bytes: status + enable */
    uint16_t pm1a_cnt_port; /* PM1a_CNT_BLK, 2 bytes */
    uint16_t pm_tmr_port;   /* 0: none */
    uint8_t sci_irq;
    uint16_t reset_port; /* FADT RESET_REG in I/O space */
    uint8_t reset_value;
    uint8_t s5_slp_typ; /* the value in \_S5 */
    bool have_pci;      /* MCFG and a PCI host bridge (PNP0A08) */
    uint64_t ecam_base;
    uint8_t ecam_end_bus;
    uint32_t pci_mmio_start, pci_mmio_end; /* 32-bit window (end exclusive) */
    uint64_t pci_mmio64_start, pci_mmio64_end;
    uint16_t pvpanic_port; /* 0: none; else a QEMU0001 device */
    uint16_t com1_port;    /* 0: none; else a PNP0501 device */
    uint8_t com1_irq;
};

/* Builds every table into BUF, which the guest sees at BUF_GPA, RSDP first (so BUF_GPA must be
 * 16-byte aligned in 0xE0000-0xFFFFF for legacy scanners). Returns bytes used, -ENOSPC when
 * BUFLEN is too small, -EINVAL for a bad configuration. */
int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t buflen, uint64_t buf_gpa);

/* Where the tables hold addresses of each other, so firmware can move them (the QEMU table
 * loader, firmware/table_loader.c): pointer fields, and the checksums that cover them in the
 * order they must be computed again. Offsets are from the start of the buffer; the RSDP is
 * its first RSDP_LEN bytes. */
#define ACPI_MAX_PTRS 32
#define ACPI_MAX_SUMS 16
struct acpi_ptr {
    uint32_t off;
    uint8_t size;
};
struct acpi_sum {
    uint32_t at, start, len;
};
struct acpi_fixups {
    unsigned nptr, nsum;
    struct acpi_ptr ptr[ACPI_MAX_PTRS];
    struct acpi_sum sum[ACPI_MAX_SUMS];
    uint32_t rsdp_len;
};
/* acpi_build, also filling FIX (when not NULL). */
int acpi_build_fixups(const struct acpi_config *cfg, uint8_t *buf, size_t buflen, uint64_t buf_gpa,
                      struct acpi_fixups *fix);

/* Sum of LEN bytes modulo 256 (0 for a table with a right checksum). */
uint8_t acpi_checksum(const void *p, size_t len);

#endif
