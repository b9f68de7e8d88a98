/* Touches touch=MiB of memory (default 256) from 64 MiB up, one word per 4 KiB page, reads
 * it back, prints "TOUCHED mib=N ram=M ms=T" and then idles (halted, waking on the tick)
 * until the host kills it or hold=seconds (default 300) pass; then it ends through
 * debug-exit. tests/t-overcommit.sh runs several of these side by side in guests whose
 * memory adds up to more than the host has: only the touched memory becomes resident.
 * 32-bit, paging off: only RAM below 4 GiB is reachable, so the region must end there. */
#include "virtio.h"

#define PAGE 4096u
#define MIB  (1024u * 1024u)
#define BASE (64u * MIB)

void test_main(void)
{
    uint32_t mib = (uint32_t)arg_u64("touch", 256), hold = (uint32_t)arg_u64("hold", 300);
    uint64_t ram = 0, end = ram_end();
    for (unsigned i = 0; i < boot.nmem; i++)
        if (boot.mem[i].type == 1)
            ram += boot.mem[i].size;
    printf("RAM %u MiB in the memory map, %u MiB of it below 4 GiB\n", (uint32_t)(ram / MIB),
           (uint32_t)(end / MIB));
    if (mib > 3072 || BASE + (uint64_t)mib * MIB > end) {
        fail("touch=%u MiB from %u MiB does not fit below the end of low RAM (%u MiB)", mib, BASE / MIB,
             (uint32_t)(end / MIB));
        finish();
    }
    uint64_t t0 = clock_us();
    uint32_t a, stop = BASE + mib * MIB, bad = 0;
    for (a = BASE; a != stop; a += PAGE)
        *(volatile uint32_t *)a = a ^ 0x5a5a5a5au;
    for (a = BASE; a != stop; a += PAGE)
        bad += *(volatile uint32_t *)a != (a ^ 0x5a5a5a5au);
    check(bad == 0, "%u MiB touched and read back (%u pages wrong)", mib, bad);
    printf("TOUCHED mib=%u ram=%u ms=%u\n", mib, (uint32_t)(ram / MIB), (uint32_t)((clock_us() - t0) / 1000));
    /* Idle: a 1 s timer from the PM timer clock, halting between ticks of the LAPIC timer. */
    virtio_irq_init();
    t0 = clock_us();
    while (clock_us() - t0 < (uint64_t)hold * 1000000u)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    finish();
}
