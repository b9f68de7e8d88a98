/* All vCPUs come up and run: the MADT lists cpus=N enabled local APICs; INIT-SIPI-SIPI
 * starts the others on a real-mode trampoline; each increments a shared counter with a
 * locked instruction and records its APIC ID, which must be distinct and in the MADT. */
#include "gt.h"

#define TRAMP_BASE 0x10000
#define MAX_CPUS   64

extern const uint8_t tramp_start[], tramp_end[], tramp_count[], tramp_stacks[], tramp_entry[];
static uint8_t stacks[MAX_CPUS][4096] __attribute__((aligned(16)));
static volatile uint32_t arrived;
static volatile uint32_t ids[MAX_CPUS];

static void ap_main(uint32_t idx)
{
    if (idx < MAX_CPUS)
        ids[idx] = lapic_id();
    __atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
    for (;;)
        hlt();
}

static void *tramp_field(const uint8_t *sym)
{
    return (void *)(uintptr_t)(TRAMP_BASE + (uint32_t)(sym - tramp_start));
}

static void send_ipi(uint32_t icr)
{
    mmio_write32(LAPIC_BASE + 0x310, 0);
    mmio_write32(LAPIC_BASE + 0x300, icr);
    for (int i = 0; i < 100000 && (mmio_read32(LAPIC_BASE + 0x300) & (1u << 12)); i++)
        pause();
}

void test_main(void)
{
    unsigned want = (unsigned)arg_u64("cpus", 1);
    uint8_t madt_ids[MAX_CPUS];
    unsigned n = madt_cpus(madt_ids, MAX_CPUS);
    check(n == want, "MADT lists %u enabled CPUs (cpus=%u)", n, want);
    if (n < 2 || n > MAX_CPUS)
        return;
    lapic_enable();
    memcpy((void *)TRAMP_BASE, tramp_start, (size_t)(tramp_end - tramp_start));
    *(uint32_t *)tramp_field(tramp_count) = 0;
    *(uint32_t *)tramp_field(tramp_stacks) = (uint32_t)(uintptr_t)stacks;
    *(uint32_t *)tramp_field(tramp_entry) = (uint32_t)(uintptr_t)ap_main;
    send_ipi(0x000c4500); /* INIT to all but self */
    delay_us(10000);
    for (int i = 0; i < 2; i++) {
        send_ipi(0x000c4600 | (TRAMP_BASE >> 12)); /* STARTUP */
        delay_us(200);
    }
    for (int i = 0; i < 300 && arrived < n - 1; i++)
        delay_us(10000);
    check(arrived == n - 1, "%u of %u application processors arrived", (unsigned)arrived, n - 1);
    bool distinct = true, listed = true;
    uint32_t bsp = lapic_id();
    for (unsigned i = 0; i < arrived && i < MAX_CPUS; i++) {
        bool in_madt = false;
        for (unsigned j = 0; j < n; j++)
            in_madt |= madt_ids[j] == ids[i];
        listed &= in_madt && ids[i] != bsp;
        for (unsigned j = 0; j < i; j++)
            distinct &= ids[i] != ids[j];
        printf("AP %u has APIC ID %u\n", i, (unsigned)ids[i]);
    }
    check(distinct && listed, "each AP has its own APIC ID from the MADT (BSP is %u)", (unsigned)bsp);
}
