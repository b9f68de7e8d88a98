/* ACPI table builder (ACPI 6.4, chapter 5). Tables are laid out one after another in a
 * buffer the guest sees at a known address, each 16-byte aligned (FACS 64-byte aligned). */
#include "firmware/acpi.h"
#include "vmm/layout.h"

#include <errno.h>
#include <string.h>

#include "firmware/aml.h"

#define OEM_ID     "KVMBOX"
#define OEM_TABLE  "KVMBOXPC"
#define CREATOR    "KVMB"
#define SDT_HEADER 36
#define FADT_LEN   276
#define FACS_LEN   64
#define MAX_TABLES 8

struct builder {
    uint8_t *buf;
    size_t cap, len;
    uint64_t gpa;
    int err;
    struct acpi_fixups *fix; /* NULL: nobody relocates the tables */
};

/* Records a pointer field (the table loader adds the tables' final address to it). */
static void note_ptr(struct builder *b, size_t off, uint8_t size)
{
    if (!b->fix)
        return;
    if (b->fix->nptr == ACPI_MAX_PTRS) {
        b->err = -ENOSPC;
        return;
    }
    b->fix->ptr[b->fix->nptr++] = (struct acpi_ptr){ (uint32_t)off, size };
}

/* Records a checksum to compute again once pointers are patched. */
static void note_sum(struct builder *b, size_t at, size_t start, size_t len)
{
    if (!b->fix)
        return;
    if (b->fix->nsum == ACPI_MAX_SUMS) {
        b->err = -ENOSPC;
        return;
    }
    b->fix->sum[b->fix->nsum++] = (struct acpi_sum){ (uint32_t)at, (uint32_t)start, (uint32_t)len };
}

static void w8(uint8_t *p, uint8_t v)
{
    p[0] = v;
}
static void w16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void w32(uint8_t *p, uint32_t v)
{
    w16(p, (uint16_t)v);
    w16(p + 2, (uint16_t)(v >> 16));
}
static void w64(uint8_t *p, uint64_t v)
{
    w32(p, (uint32_t)v);
    w32(p + 4, (uint32_t)(v >> 32));
}

uint8_t acpi_checksum(const void *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + ((const uint8_t *)p)[i]);
    return s;
}

/* Reserves LEN zeroed bytes aligned to ALIGN; returns the offset or (size_t)-1. */
static size_t reserve(struct builder *b, size_t len, size_t align)
{
    size_t off = (b->len + align - 1) & ~(align - 1);
    if (b->err || off > b->cap || len > b->cap - off) {
        b->err = -ENOSPC;
        return (size_t)-1;
    }
    memset(b->buf + b->len, 0, off + len - b->len);
    b->len = off + len;
    return off;
}

static void sdt_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    w32(t + 4, len);
    w8(t + 8, rev);
    memcpy(t + 10, OEM_ID, 6);
    memcpy(t + 16, OEM_TABLE, 8);
    w32(t + 24, 1);
    memcpy(t + 28, CREATOR, 4);
    w32(t + 32, 1);
}

static void sdt_finish(uint8_t *t)
{
    uint32_t len = (uint32_t)(t[4] | t[5] << 8 | t[6] << 16 | (uint32_t)t[7] << 24);
    t[9] = 0;
    t[9] = (uint8_t)(0x100 - acpi_checksum(t, len));
}

/* Generic Address Structure in I/O space. */
static void gas_io(uint8_t *p, uint16_t port, uint8_t bits)
{
    w8(p, 1); /* system I/O */
    w8(p + 1, bits);
    w8(p + 2, 0);
    w8(p + 3, bits <= 8 ? 1 : bits <= 16 ? 2 : 3); /* access size */
    w64(p + 4, port);
}

static size_t build_facs(struct builder *b)
{
    size_t off = reserve(b, FACS_LEN, 64);
    if (off == (size_t)-1)
        return off;
    uint8_t *t = b->buf + off;
    memcpy(t, "FACS", 4);
    w32(t + 4, FACS_LEN);
    w8(t + 32, 2); /* version */
    return off;
}

static void dsdt_devices(struct aml *a, const struct acpi_config *c)
{
    aml_scope_open(a, "\\_SB");
    if (c->com1_port) {
        aml_device_open(a, "COM1");
        aml_name(a, "_HID"), aml_eisaid(a, "PNP0501");
        aml_name(a, "_UID"), aml_integer(a, 1);
        aml_name(a, "_CRS"), aml_buffer_open(a);
        aml_res_io(a, c->com1_port, 8);
        aml_res_irq(a, c->com1_irq);
        aml_res_end(a);
        aml_close(a);
        aml_close(a);
    }
    if (c->pvpanic_port) {
        aml_device_open(a, "PEVT");
        aml_name(a, "_HID"), aml_string(a, "QEMU0001");
        aml_name(a, "_CRS"), aml_buffer_open(a);
        aml_res_io(a, c->pvpanic_port, 1);
        aml_res_end(a);
        aml_close(a);
        aml_close(a);
    }
    if (c->have_pci) {
        aml_device_open(a, "PCI0");
        aml_name(a, "_HID"), aml_eisaid(a, "PNP0A08");
        aml_name(a, "_CID"), aml_eisaid(a, "PNP0A03");
        aml_name(a, "_SEG"), aml_integer(a, 0);
        aml_name(a, "_UID"), aml_integer(a, 0);
        aml_name(a, "_BBN"), aml_integer(a, 0);
        aml_name(a, "_CRS"), aml_buffer_open(a);
        aml_res_bus(a, 0, c->ecam_end_bus);
        aml_res_io(a, 0xcf8, 8);
        aml_res_io_window(a, 0x0000, 0x0cf7);
        aml_res_io_window(a, 0x0d00, 0xffff);
        aml_res_mem32(a, c->pci_mmio_start, c->pci_mmio_end - 1);
        if (c->pci_mmio64_end > c->pci_mmio64_start)
            aml_res_mem64(a, c->pci_mmio64_start, c->pci_mmio64_end - 1);
        aml_res_end(a);
        aml_close(a);
        /* _PRT: INTx of every slot and pin, straight to IOAPIC GSIs (no link devices). */
        aml_name(a, "_PRT");
        aml_package_open(a, (LAYOUT_PCI_SLOTS - 1) * 4);
        for (unsigned slot = 1; slot < LAYOUT_PCI_SLOTS; slot++)
            for (unsigned pin = 0; pin < 4; pin++) {
                aml_package_open(a, 4);
                aml_integer(a, (uint64_t)slot << 16 | 0xffff);
                aml_integer(a, pin);
                aml_integer(a, 0);
                aml_integer(a, LAYOUT_PCI_INTX_GSI(slot, pin));
                aml_close(a);
            }
        aml_close(a);
        aml_close(a);
    }
    aml_close(a);
}

static size_t build_dsdt(struct builder *b, const struct acpi_config *c)
{
    size_t off = reserve(b, SDT_HEADER, 16);
    if (off == (size_t)-1)
        return off;
    struct aml a;
    aml_init(&a, b->buf + b->len, b->cap - b->len);
    /* \_S5: SLP_TYPa, SLP_TYPb, two reserved (ACPI 7.4.2) */
    aml_name(&a, "\\_S5");
    aml_package_open(&a, 4);
    aml_integer(&a, c->s5_slp_typ), aml_integer(&a, c->s5_slp_typ);
    aml_integer(&a, 0), aml_integer(&a, 0);
    aml_close(&a);
    dsdt_devices(&a, c);
    int n = aml_finish(&a);
    if (n < 0) {
        b->err = n;
        return (size_t)-1;
    }
    b->len += (size_t)n;
    sdt_header(b->buf + off, "DSDT", (uint32_t)(SDT_HEADER + (size_t)n), 2);
    sdt_finish(b->buf + off);
    return off;
}

static size_t build_fadt(struct builder *b, const struct acpi_config *c, uint64_t facs, uint64_t dsdt)
{
    size_t off = reserve(b, FADT_LEN, 16);
    if (off == (size_t)-1)
        return off;
    uint8_t *t = b->buf + off;
    sdt_header(t, "FACP", FADT_LEN, 6);
    w32(t + 36, (uint32_t)facs);
    w32(t + 40, (uint32_t)dsdt);
    note_ptr(b, off + 36, 4), note_ptr(b, off + 40, 4), note_ptr(b, off + 140, 8);
    w16(t + 46, c->sci_irq);
    /* SMI_CMD stays 0: the machine is always in ACPI mode (SCI_EN reads 1). */
    w32(t + 56, c->pm1a_evt_port);
    w32(t + 64, c->pm1a_cnt_port);
    w32(t + 76, c->pm_tmr_port);
    w8(t + 88, 4);                      /* PM1_EVT_LEN */
    w8(t + 89, 2);                      /* PM1_CNT_LEN */
    w8(t + 91, c->pm_tmr_port ? 4 : 0); /* PM_TMR_LEN */
    w8(t + 108, 0x32);                  /* CMOS index of the century */
    w16(t + 109, 0x0003);               /* IAPC_BOOT_ARCH: legacy devices, 8042 */
    /* WBINVD, PROC_C1, SLP_BUTTON (no sleep button), RESET_REG_SUP; the power button is the
     * fixed-feature one (PWR_BUTTON clear). */
    w32(t + 112, (1u << 0) | (1u << 2) | (1u << 5) | (1u << 10));
    gas_io(t + 116, c->reset_port, 8);
    w8(t + 128, c->reset_value);
    w8(t + 131, 4); /* FADT minor version: 6.4 */
    /* X_FIRMWARE_CTRL stays 0: FIRMWARE_CTRL (32-bit) already points at the FACS, and setting
     * both makes guests list it twice. X_DSDT is set as ACPI 2.0+ OSes prefer it. */
    w64(t + 140, dsdt);
    gas_io(t + 148, c->pm1a_evt_port, 32);
    gas_io(t + 172, c->pm1a_cnt_port, 16);
    if (c->pm_tmr_port)
        gas_io(t + 208, c->pm_tmr_port, 32);
    memcpy(t + 268, "KVMBOX\0\0", 8); /* hypervisor vendor identity */
    sdt_finish(t);
    note_sum(b, off + 9, off, FADT_LEN);
    return off;
}

static size_t build_madt(struct builder *b, const struct acpi_config *c)
{
    size_t len = SDT_HEADER + 8;
    for (unsigned i = 0; i < c->ncpus; i++)
        len += i < 255 ? 8 : 16;
    len += 12 + 2 * 10 + 6;
    size_t off = reserve(b, len, 16);
    if (off == (size_t)-1)
        return off;
    uint8_t *t = b->buf + off, *p = t + SDT_HEADER + 8;
    sdt_header(t, "APIC", (uint32_t)len, 5);
    w32(t + 36, (uint32_t)c->lapic_addr);
    w32(t + 40, 1); /* PCAT_COMPAT: the 8259s are there */
    for (unsigned i = 0; i < c->ncpus; i++) {
        if (i < 255) { /* xAPIC IDs go up to 254; 255 is broadcast */
            w8(p, 0), w8(p + 1, 8), w8(p + 2, (uint8_t)i), w8(p + 3, (uint8_t)i), w32(p + 4, 1);
            p += 8;
        } else { /* Processor Local x2APIC */
            w8(p, 9), w8(p + 1, 16), w16(p + 2, 0), w32(p + 4, i), w32(p + 8, 1), w32(p + 12, i);
            p += 16;
        }
    }
    w8(p, 1), w8(p + 1, 12), w8(p + 2, c->ioapic_id), w8(p + 3, 0);
    w32(p + 4, (uint32_t)c->ioapic_addr), w32(p + 8, c->ioapic_gsi_base);
    p += 12;
    /* ISA IRQ 0 (PIT) is wired to GSI 2; the SCI is level-triggered, active high. */
    w8(p, 2), w8(p + 1, 10), w8(p + 2, 0), w8(p + 3, 0), w32(p + 4, 2), w16(p + 8, 0);
    p += 10;
    w8(p, 2), w8(p + 1, 10), w8(p + 2, 0), w8(p + 3, c->sci_irq), w32(p + 4, c->sci_irq), w16(p + 8, 0x000d);
    p += 10;
    /* LINT1 of every processor is NMI. */
    w8(p, 4), w8(p + 1, 6), w8(p + 2, 0xff), w16(p + 3, 0), w8(p + 5, 1);
    sdt_finish(t);
    return off;
}

static size_t build_mcfg(struct builder *b, const struct acpi_config *c)
{
    size_t len = SDT_HEADER + 8 + 16;
    size_t off = reserve(b, len, 16);
    if (off == (size_t)-1)
        return off;
    uint8_t *t = b->buf + off, *e = t + SDT_HEADER + 8;
    sdt_header(t, "MCFG", (uint32_t)len, 1);
    w64(e, c->ecam_base), w16(e + 8, 0), w8(e + 10, 0), w8(e + 11, c->ecam_end_bus);
    sdt_finish(t);
    return off;
}

static size_t build_rsdt_xsdt(struct builder *b, const size_t *tables, unsigned n, bool x)
{
    size_t len = SDT_HEADER + n * (x ? 8 : 4);
    size_t off = reserve(b, len, 16);
    if (off == (size_t)-1)
        return off;
    uint8_t *t = b->buf + off;
    sdt_header(t, x ? "XSDT" : "RSDT", (uint32_t)len, 1);
    for (unsigned i = 0; i < n; i++) {
        if (x)
            w64(t + SDT_HEADER + 8 * i, b->gpa + tables[i]);
        else
            w32(t + SDT_HEADER + 4 * i, (uint32_t)(b->gpa + tables[i]));
        note_ptr(b, off + SDT_HEADER + (x ? 8 : 4) * i, x ? 8 : 4);
    }
    sdt_finish(t);
    note_sum(b, off + 9, off, len);
    return off;
}

int acpi_build(const struct acpi_config *c, uint8_t *buf, size_t buflen, uint64_t buf_gpa)
{
    return acpi_build_fixups(c, buf, buflen, buf_gpa, NULL);
}

int acpi_build_fixups(const struct acpi_config *c, uint8_t *buf, size_t buflen, uint64_t buf_gpa,
                      struct acpi_fixups *fix)
{
    if (c->ncpus == 0 || buf_gpa + buflen > 0x100000000ULL || (buf_gpa & 15))
        return -EINVAL;
    if (fix)
        memset(fix, 0, sizeof(*fix));
    struct builder b = { .buf = buf, .cap = buflen, .gpa = buf_gpa, .fix = fix };
    size_t rsdp = reserve(&b, 36, 16);
    size_t facs = build_facs(&b);
    size_t dsdt = build_dsdt(&b, c);
    if (b.err)
        return b.err;
    size_t tables[MAX_TABLES];
    unsigned n = 0;
    tables[n++] = build_fadt(&b, c, buf_gpa + facs, buf_gpa + dsdt);
    tables[n++] = build_madt(&b, c);
    if (c->have_pci)
        tables[n++] = build_mcfg(&b, c);
    size_t rsdt = build_rsdt_xsdt(&b, tables, n, false);
    size_t xsdt = build_rsdt_xsdt(&b, tables, n, true);
    if (b.err)
        return b.err;
    uint8_t *r = buf + rsdp;
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, OEM_ID, 6);
    w8(r + 15, 2);
    w32(r + 16, (uint32_t)(buf_gpa + rsdt));
    w32(r + 20, 36);
    w64(r + 24, buf_gpa + xsdt);
    r[8] = (uint8_t)(0x100 - acpi_checksum(r, 20));
    r[32] = (uint8_t)(0x100 - acpi_checksum(r, 36));
    if (fix) {
        fix->rsdp_len = 36;
        note_ptr(&b, rsdp + 16, 4), note_ptr(&b, rsdp + 24, 8);
        note_sum(&b, rsdp + 8, rsdp, 20), note_sum(&b, rsdp + 32, rsdp, 36);
        if (b.err)
            return b.err;
    }
    return (int)b.len;
}
