/* Timer interrupts: the 8254 PIT's channel 0 through the IOAPIC (at the GSI the MADT's
 * override gives ISA IRQ 0), and the local APIC timer in periodic mode. Both are counted
 * over 200 ms of the ACPI PM timer.
 *
 * A busy host may not run this vCPU for a while (QEMU TCG loses the PIT ticks that fall in
 * such a gap: they merge into one interrupt). So the PIT's rate is judged against the time
 * the vCPU actually ran, seen as reads of the PM timer less than GAP_US apart, over windows
 * repeated until it ran 200 ms: at least half the ticks that time calls for, at most twice
 * what the whole time does. */
#include "gt.h"

#define VEC_PIT   0x30
#define VEC_LAPIC 0x31
#define WINDOW_US 200000
#define GAP_US    2000
#define PM_HZ     3579545u

static volatile unsigned pit_ticks, lapic_ticks;

static void on_pit(void)
{
    pit_ticks++;
    lapic_eoi();
}

static void on_lapic(void)
{
    lapic_ticks++;
    lapic_eoi();
}

static void test_pit(void)
{
    uint16_t flags;
    uint32_t gsi = madt_irq_to_gsi(0, &flags);
    printf("ISA IRQ 0 is GSI %u\n", gsi);
    idt_set(VEC_PIT, on_pit);
    ioapic_route(gsi, VEC_PIT, false, false);
    uint16_t div = 11932; /* 100 Hz */
    outb(0x43, 0x34);     /* channel 0, lo/hi, mode 2 */
    outb(0x40, (uint8_t)div), outb(0x40, (uint8_t)(div >> 8));
    uint64_t ran = 0, all = 0;
    for (unsigned w = 0; w < 50 && ran < WINDOW_US * (uint64_t)PM_HZ / 1000000; w++) {
        uint32_t start = pmtimer_read(), prev = start, now;
        sti();
        do {
            pause();
            now = pmtimer_read();
            uint32_t d = (now - prev) & 0xffffff;
            if (d < GAP_US * (uint64_t)PM_HZ / 1000000)
                ran += d;
            prev = now;
        } while (((now - start) & 0xffffff) < WINDOW_US * (uint64_t)PM_HZ / 1000000);
        cli();
        all += (now - start) & 0xffffff;
    }
    ioapic_mask(gsi);
    outb(0x43, 0x30); /* stop: mode 0, no count */
    uint32_t ran_ms = (uint32_t)(ran * 1000 / PM_HZ), all_ms = (uint32_t)(all * 1000 / PM_HZ);
    check(pit_ticks >= ran_ms / 20 && pit_ticks >= 2 && pit_ticks <= all_ms / 5,
          "PIT at 100 Hz: %u interrupts in %u ms, %u ms of it running", pit_ticks, all_ms, ran_ms);
}

static void test_lapic_timer(void)
{
    idt_set(VEC_LAPIC, on_lapic);
    mmio_write32(LAPIC_BASE + 0x3e0, 0x3);                    /* divide by 16 */
    mmio_write32(LAPIC_BASE + 0x320, VEC_LAPIC | (1u << 17)); /* periodic */
    mmio_write32(LAPIC_BASE + 0x380, 625000);                 /* 10 ms at a 1 GHz bus clock */
    sti();
    delay_us(WINDOW_US);
    cli();
    mmio_write32(LAPIC_BASE + 0x320, 1u << 16); /* masked */
    check(lapic_ticks >= 2 && lapic_ticks <= 400, "LAPIC timer periodic: %u interrupts in 200 ms",
          lapic_ticks);
}

void test_main(void)
{
    if (!fadt_pm_tmr()) {
        fail("no ACPI PM timer to measure with");
        return;
    }
    pic_disable();
    lapic_enable();
    test_pit();
    test_lapic_timer();
}
