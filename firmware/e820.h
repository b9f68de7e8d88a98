/* The guest's memory map, in the boot protocols' e820 layout. */
#ifndef KVMBOX_E820_H
#define KVMBOX_E820_H

#include <stdint.h>

#define E820_RAM      1
#define E820_RESERVED 2
#define E820_ACPI     3

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

/* Fills OUT with the map of a guest with RAM_SIZE bytes of RAM: RAM below the EBDA, the EBDA
 * and BIOS area reserved (the ACPI tables live there), RAM from 1 MiB to the PCI hole, the
 * ECAM window reserved, RAM above 4 GiB for the rest. Sorted, non-overlapping; RAM entries
 * add up to RAM_SIZE less the 384 KiB that the first MiB's holes take (as on a PC). Returns the number of entries, -EINVAL for less than 2 MiB of
 * RAM, -ENOSPC when MAX is too small. */
int e820_build(uint64_t ram_size, struct e820_entry *out, int max);

#endif
