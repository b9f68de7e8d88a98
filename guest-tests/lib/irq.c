/* IDT, 8259, local APIC and IOAPIC: what the timer and SMP tests need. */
#include "gt.h"

#define NVEC 64
struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t zero, type;
    uint16_t off_hi;
} __attribute__((packed));

static struct idt_entry idt[NVEC];
static irq_handler handlers[NVEC];
extern const uint32_t isr_table[NVEC];

void gt_interrupt(uint32_t vec);
void gt_interrupt(uint32_t vec)
{
    if (vec < NVEC && handlers[vec]) {
        handlers[vec]();
        return;
    }
    if (vec < 32) {
        fail("unexpected exception %u", vec);
        finish();
    }
    printf("note: spurious interrupt %u\n", vec);
    if (vec >= 32)
        lapic_eoi();
}

void idt_init(void)
{
    for (unsigned v = 0; v < NVEC; v++) {
        uint32_t a = isr_table[v];
        idt[v] = (struct idt_entry){ (uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16) };
    }
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) ptr = { sizeof(idt) - 1, (uint32_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" ::"m"(ptr));
}

void idt_set(uint8_t vec, irq_handler h)
{
    if (vec < NVEC)
        handlers[vec] = h;
}

void pic_disable(void)
{
    /* Initialise both 8259s (vectors 0x20/0x28) so stray IRQs are recognisable, then mask. */
    outb(0x20, 0x11), outb(0xa0, 0x11);
    outb(0x21, 0x20), outb(0xa1, 0x28);
    outb(0x21, 0x04), outb(0xa1, 0x02);
    outb(0x21, 0x01), outb(0xa1, 0x01);
    outb(0x21, 0xff), outb(0xa1, 0xff);
}

void lapic_enable(void)
{
    wrmsr(0x1b, (rdmsr(0x1b) & ~0xfffULL) | LAPIC_BASE | (1u << 11));
    mmio_write32(LAPIC_BASE + 0xf0, 0x100 | 0xff); /* software enable, spurious vector 0xff */
    mmio_write32(LAPIC_BASE + 0x80, 0);            /* TPR: accept everything */
}

void lapic_eoi(void)
{
    mmio_write32(LAPIC_BASE + 0xb0, 0);
}

uint32_t lapic_id(void)
{
    return mmio_read32(LAPIC_BASE + 0x20) >> 24;
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(IOAPIC_BASE, reg);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

void ioapic_route(uint32_t gsi, uint8_t vec, bool level, bool low)
{
    ioapic_write(0x10 + 2 * gsi + 1, lapic_id() << 24);
    ioapic_write(0x10 + 2 * gsi, vec | (level ? 1u << 15 : 0) | (low ? 1u << 13 : 0));
}

void ioapic_mask(uint32_t gsi)
{
    ioapic_write(0x10 + 2 * gsi, 1u << 16);
}
