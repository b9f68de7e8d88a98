/* Timer interrupts: the 8254 PIT's channel 0 through the IOAPIC (at the GSI the MADT's
 * override gives ISA IRQ 0), and the local APIC timer in periodic mode. Both are counted
 * over 200 ms of the ACPI PM timer. */
#include "gt.h"

#define VEC_PIT 0x30
#define VEC_LAPIC 0x31
#define WINDOW_US 200000

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
    sti();
    delay_us(WINDOW_US);
    cli();
    ioapic_mask(gsi);
    outb(0x43, 0x30); /* stop: mode 0, no count */
    check(pit_ticks >= 10 && pit_ticks <= 40, "PIT at 100 Hz: %u interrupts in 200 ms", pit_ticks);
}

static void test_lapic_timer(void)
{
    idt_set(VEC_LAPIC, on_lapic);
    mmio_write32(LAPIC_BASE + 0x3e0, 0x3);                 /* divide by 16 */
    mmio_write32(LAPIC_BASE + 0x320, VEC_LAPIC | (1u << 17)); /* periodic */
    mmio_write32(LAPIC_BASE + 0x380, 625000);             /* 10 ms at a 1 GHz bus clock */
    sti();
    delay_us(WINDOW_US);
    cli();
    mmio_write32(LAPIC_BASE + 0x320, 1u << 16);           /* masked */
    check(lapic_ticks >= 2 && lapic_ticks <= 400, "LAPIC timer periodic: %u interrupts in 200 ms", lapic_ticks);
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
