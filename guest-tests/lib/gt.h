/* The guest-test library: serial output, reporting, boot information, ACPI lookup,
 * interrupts and the x86 helpers every test kernel uses. 32-bit, paging off. */
#ifndef GT_H
#define GT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- x86 ---- */
static inline void outb(uint16_t p, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(p));
}
static inline void outw(uint16_t p, uint16_t v)
{
    __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(p));
}
static inline void outl(uint16_t p, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p));
}
static inline uint8_t inb(uint16_t p)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p));
    return v;
}
static inline uint16_t inw(uint16_t p)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p));
    return v;
}
static inline uint32_t inl(uint16_t p)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p));
    return v;
}
static inline uint32_t mmio_read32(uintptr_t a)
{
    return *(volatile uint32_t *)a;
}
static inline void mmio_write32(uintptr_t a, uint32_t v)
{
    *(volatile uint32_t *)a = v;
}
static inline void cli(void)
{
    __asm__ volatile("cli" ::: "memory");
}
static inline void sti(void)
{
    __asm__ volatile("sti" ::: "memory");
}
static inline void hlt(void)
{
    __asm__ volatile("hlt" ::: "memory");
}
static inline void pause(void)
{
    __asm__ volatile("pause" ::: "memory");
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}
static inline uint64_t rdmsr(uint32_t m)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(m));
    return (uint64_t)hi << 32 | lo;
}
static inline void wrmsr(uint32_t m, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(m), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* ---- libc subset ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t len, const char *fmt, va_list ap);
int snprintf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- serial (COM1) ---- */
void serial_init(void);
void serial_putc(char c);
bool serial_can_read(void);
int serial_getc_timeout(uint32_t spins); /* -1 on timeout */

/* ---- reporting: PASS:/FAIL: lines, a SUMMARY line, then the debug-exit port ---- */
void pass(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define check(cond, ...) ((cond) ? pass(__VA_ARGS__) : fail(__VA_ARGS__))
__attribute__((noreturn)) void finish(void); /* SUMMARY, then exit 0 (all passed) or 1 */
__attribute__((noreturn)) void debug_exit(uint32_t code);

/* ---- boot information (PVH or multiboot) ---- */
struct mem_range {
    uint64_t addr, size;
    uint32_t type;
};
#define MAX_MEM_RANGES 32
struct boot_info {
    const char *protocol; /* "pvh" or "multiboot" */
    char cmdline[1024];
    unsigned nmem;
    struct mem_range mem[MAX_MEM_RANGES];
    uint32_t rsdp; /* 0: scan for it */
};
extern struct boot_info boot;
/* Value of KEY=... on the command line, or DFLT. */
const char *arg_str(const char *key, char *buf, size_t len, const char *dflt);
uint64_t arg_u64(const char *key, uint64_t dflt);

/* The test's body; the library calls it after setting up serial and boot info. */
void test_main(void);

/* ---- ACPI ---- */
const void *acpi_rsdp(void);
const void *acpi_find(const char *sig); /* through the XSDT or RSDT; NULL if absent */
uint8_t acpi_sum(const void *p, uint32_t len);
bool acpi_s5(uint8_t *slp_typ); /* decodes \_S5 from the DSDT */
unsigned madt_cpus(uint8_t *ids, unsigned max);
uint32_t madt_irq_to_gsi(uint8_t irq, uint16_t *flags);
uint16_t fadt_pm1a_cnt(void);
uint32_t fadt_pm_tmr(void);

/* ---- interrupts ---- */
typedef void (*irq_handler)(void);
void idt_init(void);                      /* exceptions print and FAIL */
void idt_set(uint8_t vec, irq_handler h); /* h is called with interrupts off; EOI is the caller's */
void pic_disable(void);
void lapic_enable(void);
void lapic_eoi(void);
uint32_t lapic_id(void);
void ioapic_route(uint32_t gsi, uint8_t vec, bool level, bool low);
void ioapic_mask(uint32_t gsi);
#define LAPIC_BASE  0xfee00000u
#define IOAPIC_BASE 0xfec00000u

/* ---- time ---- */
uint32_t pmtimer_read(void); /* 3.579545 MHz, 24 bits */
void delay_us(uint32_t us);  /* busy-waits on the PM timer */

#endif
