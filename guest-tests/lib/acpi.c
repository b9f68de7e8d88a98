/* Finding ACPI tables the way an OS does: the RSDP from the boot protocol or a scan of the
 * BIOS area, then the XSDT (revision 2) or RSDT. */
#include "gt.h"

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint8_t acpi_sum(const void *p, uint32_t len)
{
    uint8_t s = 0;
    for (uint32_t i = 0; i < len; i++)
        s = (uint8_t)(s + ((const uint8_t *)p)[i]);
    return s;
}

const void *acpi_rsdp(void)
{
    if (boot.rsdp)
        return (const void *)(uintptr_t)boot.rsdp;
    for (uint32_t a = 0xe0000; a < 0x100000; a += 16)
        if (!memcmp((const void *)(uintptr_t)a, "RSD PTR ", 8) &&
            acpi_sum((const void *)(uintptr_t)a, 20) == 0)
            return (const void *)(uintptr_t)a;
    return NULL;
}

const void *acpi_find(const char *sig)
{
    const uint8_t *rsdp = acpi_rsdp();
    if (!rsdp)
        return NULL;
    bool x = rsdp[15] >= 2 && rd32(rsdp + 28) == 0 && rd32(rsdp + 24);
    const uint8_t *root = (const uint8_t *)(uintptr_t)(x ? rd32(rsdp + 24) : rd32(rsdp + 16));
    uint32_t len = rd32(root + 4), step = x ? 8 : 4;
    for (uint32_t off = 36; off + step <= len; off += step) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)rd32(root + off);
        if (!memcmp(t, sig, 4))
            return t;
    }
    if (!memcmp(sig, "DSDT", 4)) {
        const uint8_t *f = acpi_find("FACP");
        return f ? (const void *)(uintptr_t)rd32(f + 40) : NULL;
    }
    return NULL;
}

/* \_S5 is Name(_S5_, Package(){ SLP_TYPa, ... }); elements are ZeroOp, OneOp or BytePrefix. */
bool acpi_s5(uint8_t *slp_typ)
{
    const uint8_t *d = acpi_find("DSDT");
    if (!d)
        return false;
    uint32_t len = rd32(d + 4);
    for (uint32_t i = 36; i + 8 < len; i++) {
        if (memcmp(d + i, "_S5_", 4) || d[i + 4] != 0x12)
            continue;
        const uint8_t *p = d + i + 5;
        p += (*p >> 6) + 1; /* PkgLength */
        p++;                /* NumElements */
        if (*p == 0x0a)
            *slp_typ = p[1];
        else if (*p == 0x00 || *p == 0x01)
            *slp_typ = *p;
        else
            return false;
        return true;
    }
    return false;
}

unsigned madt_cpus(uint8_t *ids, unsigned max)
{
    const uint8_t *m = acpi_find("APIC");
    unsigned n = 0;
    if (!m)
        return 0;
    for (uint32_t off = 44; off + 2 <= rd32(m + 4) && m[off + 1]; off += m[off + 1]) {
        if (m[off] == 0 && (rd32(m + off + 4) & 1)) {
            if (n < max)
                ids[n] = m[off + 3];
            n++;
        } else if (m[off] == 9 && (rd32(m + off + 8) & 1)) {
            if (n < max)
                ids[n] = (uint8_t)rd32(m + off + 4);
            n++;
        }
    }
    return n;
}

uint32_t madt_irq_to_gsi(uint8_t irq, uint16_t *flags)
{
    const uint8_t *m = acpi_find("APIC");
    *flags = 0;
    if (!m)
        return irq;
    for (uint32_t off = 44; off + 2 <= rd32(m + 4) && m[off + 1]; off += m[off + 1]) {
        if (m[off] == 2 && m[off + 3] == irq) {
            memcpy(flags, m + off + 8, 2);
            return rd32(m + off + 4);
        }
    }
    return irq;
}

uint16_t fadt_pm1a_cnt(void)
{
    const uint8_t *f = acpi_find("FACP");
    return f ? (uint16_t)rd32(f + 64) : 0;
}

uint32_t fadt_pm_tmr(void)
{
    const uint8_t *f = acpi_find("FACP");
    return f ? rd32(f + 76) : 0;
}
