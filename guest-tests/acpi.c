/* The ACPI tables are well-formed: RSDP checksums (and the extended one for revision 2),
 * the RSDT/XSDT and every table it points to check out, the FADT has a PM1a control block
 * and a DSDT holding \_S5, and the MADT has one enabled local APIC per vCPU (cpus=N) and an
 * IOAPIC. */
#include "gt.h"

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

void test_main(void)
{
    const uint8_t *rsdp = acpi_rsdp();
    check(rsdp != NULL, "RSDP found (%s)", boot.rsdp ? "from the boot protocol" : "by scanning");
    if (!rsdp)
        return;
    check(acpi_sum(rsdp, 20) == 0, "RSDP checksum");
    if (rsdp[15] >= 2)
        check(acpi_sum(rsdp, rd32(rsdp + 20)) == 0, "RSDP extended checksum (revision %u)", rsdp[15]);
    bool x = rsdp[15] >= 2 && rd32(rsdp + 24);
    const uint8_t *root = (const uint8_t *)(uintptr_t)(x ? rd32(rsdp + 24) : rd32(rsdp + 16));
    check(!memcmp(root, x ? "XSDT" : "RSDT", 4) && acpi_sum(root, rd32(root + 4)) == 0,
          "%s signature and checksum", x ? "XSDT" : "RSDT");
    uint32_t step = x ? 8 : 4, bad = 0, count = 0;
    for (uint32_t off = 36; off + step <= rd32(root + 4); off += step) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)rd32(root + off);
        count++;
        if (acpi_sum(t, rd32(t + 4)) != 0) {
            printf("bad checksum: %.4s\n", (const char *)t);
            bad++;
        }
    }
    check(count >= 2 && bad == 0, "all %u tables have valid checksums", count);
    const uint8_t *fadt = acpi_find("FACP");
    check(fadt && fadt_pm1a_cnt() != 0, "FADT with a PM1a control block (port %x)", fadt_pm1a_cnt());
    const uint8_t *dsdt = acpi_find("DSDT");
    check(dsdt && !memcmp(dsdt, "DSDT", 4) && acpi_sum(dsdt, rd32(dsdt + 4)) == 0,
          "DSDT present, checksum valid");
    uint8_t typ;
    check(acpi_s5(&typ), "DSDT defines \\_S5 (SLP_TYPa %u)", typ);
    unsigned want = (unsigned)arg_u64("cpus", 1);
    uint8_t ids[256];
    check(madt_cpus(ids, 256) == want, "MADT has %u enabled local APICs for cpus=%u", madt_cpus(ids, 256),
          want);
    const uint8_t *m = acpi_find("APIC");
    bool ioapic = false;
    for (uint32_t off = 44; m && off + 2 <= rd32(m + 4) && m[off + 1]; off += m[off + 1])
        ioapic |= m[off] == 1;
    check(ioapic, "MADT has an IOAPIC entry");
}
