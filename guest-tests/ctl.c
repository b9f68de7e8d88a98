/* A long-running guest for the control-plane tests (tests/t-api.sh): prints
 * "TICK n kvmclock_ms=t" every 200 ms, echoes console input lines as "ECHO: line", and on the
 * ACPI power button (SCI, PM1 PWRBTN_STS) powers off through \_S5 — unless pwrbtn=ignore.
 * Not in tests.list: it never ends by itself. */
#include "gt.h"

#define VEC_SCI                 0x32
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

struct pvclock {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t mul;
    int8_t shift;
    uint8_t flags, pad[2];
} __attribute__((packed));

static volatile struct pvclock clock __attribute__((aligned(64)));
static bool have_clock, ignore_button;
static uint16_t pm1_evt;
static volatile bool button;

static uint64_t kvmclock_ns(void)
{
    uint32_t v;
    uint64_t t;
    do {
        v = clock.version;
        __asm__ volatile("" ::: "memory");
        uint64_t d = rdtsc() - clock.tsc_timestamp;
        d = clock.shift >= 0 ? d << clock.shift : d >> -clock.shift;
        t = clock.system_time + (d >> 32) * clock.mul + (((d & 0xffffffffu) * clock.mul) >> 32);
        __asm__ volatile("" ::: "memory");
    } while ((v & 1) || v != clock.version);
    return t;
}

static void on_sci(void)
{
    uint16_t sts = inw(pm1_evt);
    if (sts & 0x100) {
        outw(pm1_evt, 0x100); /* write 1 to clear */
        button = true;
    }
    lapic_eoi();
}

static void setup_button(void)
{
    const uint8_t *f = acpi_find("FACP");
    if (!f)
        return;
    uint32_t evt;
    memcpy(&evt, f + 56, 4);
    pm1_evt = (uint16_t)evt;
    uint16_t sci, flags;
    memcpy(&sci, f + 46, 2);
    uint32_t gsi = madt_irq_to_gsi((uint8_t)sci, &flags);
    idt_set(VEC_SCI, on_sci);
    ioapic_route(gsi, VEC_SCI, true, (flags & 3) == 3);
    outw(pm1_evt, 0xffff);    /* clear stale status */
    outw(pm1_evt + 2, 0x100); /* PWRBTN_EN */
}

static void poweroff(void)
{
    uint8_t typ;
    if (acpi_s5(&typ))
        outw(fadt_pm1a_cnt(), (uint16_t)((typ << 10) | (1u << 13)));
}

void test_main(void)
{
    char buf[16];
    ignore_button = !strncmp(arg_str("pwrbtn", buf, sizeof(buf), "poweroff"), "ignore", 7);
    uint32_t r[4];
    cpuid(0x40000001, 0, r);
    have_clock = r[0] & (1u << 3); /* KVM_FEATURE_CLOCKSOURCE2 */
    if (have_clock)
        wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint32_t)(uintptr_t)&clock | 1);
    pic_disable();
    lapic_enable();
    setup_button();
    sti();
    printf("CTL-READY clock=%u pwrbtn=%s\n", have_clock, ignore_button ? "ignore" : "poweroff");
    char line[128];
    unsigned n = 0;
    for (uint32_t tick = 0;; tick++) {
        uint64_t ms = have_clock ? kvmclock_ns() / 1000000 : 0;
        printf("TICK %u kvmclock_ms=%llu\n", tick, (unsigned long long)ms);
        for (int i = 0; i < 20; i++) {
            delay_us(10000);
            while (serial_can_read()) {
                char c = (char)inb(0x3f8);
                if (c == '\r' || c == '\n') {
                    line[n] = 0;
                    if (n)
                        printf("ECHO: %s\n", line);
                    n = 0;
                } else if (n + 1 < sizeof(line)) {
                    line[n++] = c;
                }
            }
            if (button) {
                button = false;
                printf("POWER-BUTTON%s\n", ignore_button ? " (ignored)" : "");
                if (!ignore_button)
                    poweroff();
            }
        }
    }
}
