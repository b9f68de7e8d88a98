/* The memory map is sane and as configured (mem=<bytes> on the command line): sorted and
 * non-overlapping, RAM below 640 KiB, none in the VGA/BIOS area or over the APICs, the
 * total within 4 MiB below mem, and RAM above 4 GiB when mem is larger than 3.5 GiB. */
#include "gt.h"

void test_main(void)
{
    uint64_t mem = arg_u64("mem", 0);
    check(boot.nmem > 0, "the boot protocol (%s) gave a memory map of %u entries", boot.protocol, boot.nmem);
    uint64_t total = 0, high = 0;
    bool sorted = true, low_ram = false, hole_clear = true, apic_clear = true;
    for (unsigned i = 0; i < boot.nmem; i++) {
        const struct mem_range *r = &boot.mem[i];
        printf("  %016llx-%016llx type %u\n", (unsigned long long)r->addr,
               (unsigned long long)(r->addr + r->size - 1), r->type);
        if (i && r->addr < boot.mem[i - 1].addr + boot.mem[i - 1].size)
            sorted = false;
        if (r->type != 1)
            continue;
        total += r->size;
        uint64_t end = r->addr + r->size;
        if (r->addr == 0 && r->size >= 0x80000)
            low_ram = true;
        if (r->addr < 0x100000 && end > 0xa0000)
            hole_clear = false;
        if (r->addr < 0xfee01000ULL && end > 0xfec00000ULL)
            apic_clear = false;
        if (r->addr >= 0x100000000ULL)
            high += r->size;
    }
    check(sorted, "entries are sorted and do not overlap");
    check(low_ram, "RAM from 0 to at least 512 KiB");
    check(hole_clear, "no RAM in 0xA0000-0xFFFFF");
    check(apic_clear, "no RAM over the IOAPIC and LAPIC");
    if (!mem) {
        fail("no mem= on the command line");
        return;
    }
    check(total <= mem && total + (4u << 20) >= mem, "usable RAM %llu KiB for mem=%llu KiB",
          (unsigned long long)(total >> 10), (unsigned long long)(mem >> 10));
    if (mem > (7ULL << 29))
        check(high > 0, "RAM above 4 GiB: %llu MiB", (unsigned long long)(high >> 20));
}
