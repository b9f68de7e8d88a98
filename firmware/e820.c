#include "firmware/e820.h"

#include <errno.h>

#include "vmm/layout.h"

static int add(struct e820_entry *out, int *n, int max, uint64_t addr, uint64_t size, uint32_t type)
{
    if (size == 0)
        return 0;
    if (*n == max)
        return -ENOSPC;
    out[(*n)++] = (struct e820_entry){ addr, size, type };
    return 0;
}

int e820_build(uint64_t ram_size, struct e820_entry *out, int max)
{
    if (ram_size < 2 * LAYOUT_HIGH_KERNEL)
        return -EINVAL;
    uint64_t low_end = ram_size < LAYOUT_MMIO_START ? ram_size : LAYOUT_MMIO_START;
    int n = 0, r;
    /* The first MiB: RAM up to the EBDA, then the EBDA and the BIOS area reserved; the VGA
     * hole (0xA0000-0xE0000) is left out, as on a PC, though our memory slot covers it. */
    if ((r = add(out, &n, max, 0, LAYOUT_EBDA, E820_RAM)) < 0 ||
        (r = add(out, &n, max, LAYOUT_EBDA, 0xa0000 - LAYOUT_EBDA, E820_RESERVED)) < 0 ||
        (r = add(out, &n, max, LAYOUT_BIOS_START, LAYOUT_BIOS_END - LAYOUT_BIOS_START, E820_RESERVED)) < 0 ||
        (r = add(out, &n, max, LAYOUT_HIGH_KERNEL, low_end - LAYOUT_HIGH_KERNEL, E820_RAM)) < 0 ||
        (r = add(out, &n, max, LAYOUT_ECAM_BASE, LAYOUT_ECAM_SIZE, E820_RESERVED)) < 0 ||
        (r = add(out, &n, max, LAYOUT_4G, ram_size - low_end, E820_RAM)) < 0)
        return r;
    return n;
}
