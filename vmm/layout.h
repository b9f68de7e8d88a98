/* Guest-physical and I/O-port layout of the kvmbox PC. One place, so firmware tables,
 * the e820 map and device registration cannot disagree. */
#ifndef KVMBOX_LAYOUT_H
#define KVMBOX_LAYOUT_H

/* Low memory */
#define LAYOUT_GDT         0x00000500ULL /* boot GDT for 32/64-bit entry */
#define LAYOUT_START_INFO  0x00006000ULL /* hvm_start_info / multiboot info (one page) */
#define LAYOUT_ZERO_PAGE   0x00007000ULL /* Linux boot_params */
#define LAYOUT_BOOT_STACK  0x00008ff0ULL
#define LAYOUT_PML4        0x00009000ULL /* identity page tables for 64-bit Linux entry */
#define LAYOUT_PDPT        0x0000a000ULL
#define LAYOUT_PD          0x0000b000ULL /* 4 pages: identity map of the first 4 GiB */
#define LAYOUT_E820_EXTRA  0x0000f000ULL /* e820 table for PVH / multiboot mmap */
#define LAYOUT_CMDLINE     0x00020000ULL
#define LAYOUT_CMDLINE_MAX 0x00010000ULL /* 64 KiB */
#define LAYOUT_EBDA        0x0009fc00ULL /* RAM ends here in the first MiB */
#define LAYOUT_BIOS_START  0x000e0000ULL /* reserved: ACPI tables and RSDP live here */
#define LAYOUT_BIOS_END    0x00100000ULL
#define LAYOUT_ACPI_BASE   0x000e0000ULL
#define LAYOUT_ACPI_SIZE   0x00010000ULL /* 64 KiB for all tables */
#define LAYOUT_HIGH_KERNEL 0x00100000ULL /* 1 MiB: protected-mode kernel load address */

/* The PCI hole: RAM below 4 GiB ends at LAYOUT_MMIO_START. */
#define LAYOUT_MMIO_START        0xc0000000ULL
#define LAYOUT_PCI_MMIO_START    0xc0000000ULL /* 32-bit BARs */
#define LAYOUT_PCI_MMIO_END      0xe0000000ULL
#define LAYOUT_ECAM_BASE         0xe0000000ULL /* PCI ECAM, bus 0 only (1 MiB) */
#define LAYOUT_ECAM_SIZE         0x00100000ULL
#define LAYOUT_PCI_MMIO_HI_START 0xe0100000ULL /* BARs may also be moved here (firmware does) */
#define LAYOUT_PCI_MMIO_HI_END   0xfec00000ULL
#define LAYOUT_IOAPIC            0xfec00000ULL
#define LAYOUT_LAPIC             0xfee00000ULL
#define LAYOUT_4G                0x100000000ULL
#define LAYOUT_PCI_MMIO64        0x8000000000ULL /* 64-bit BARs: 512 GiB up */

/* I/O ports */
#define PORT_PIC1       0x20
#define PORT_PIT        0x40
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD  0x64
#define PORT_RTC        0x70
#define PORT_POST       0x80
#define PORT_DEBUG_EXIT 0xf4 /* QEMU isa-debug-exit, iosize 4 */
#define PORT_COM1       0x3f8
#define PORT_PVPANIC    0x505 /* QEMU's ISA pvpanic default */
#define PORT_PM_BASE    0x600 /* ACPI PM block: PM1a_EVT (4), PM1a_CNT (2), PM_TMR (4) */
#define PORT_PM1A_EVT   0x600
#define PORT_PM1A_CNT   0x604
#define PORT_PM_TMR     0x608
#define PORT_PM_SIZE    0x10
#define PORT_PCI_CONFIG 0xcf8 /* 0xcf8..0xcff */
#define PORT_RESET      0xcf9 /* FADT RESET_REG, write 0x06 */

/* IRQ lines (GSI) */
#define IRQ_PIT  0
#define IRQ_COM1 4
#define IRQ_SCI  9
#define IRQ_RTC  8

/* PCI INTx: slot S pin P (0 = INTA) reaches IOAPIC pin 16 + ((S + P) & 7). The DSDT's _PRT
 * and devices/pci.c both use this. */
#define LAYOUT_PCI_INTX_GSI(slot, pin) (16u + (((slot) + (pin)) & 7u))
#define LAYOUT_PCI_SLOTS               32

/* ACPI S5 sleep type we advertise in \_S5 and accept in PM1a_CNT */
#define ACPI_SLP_TYP_S5 5

#endif
