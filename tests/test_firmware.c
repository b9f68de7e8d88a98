/* Unit tests for the e820 map and the ACPI tables: layout, checksums, pointers, per-vCPU
 * MADT entries, the \_S5 package, MCFG only with PCI, and iasl (when installed) as an oracle. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "firmware/acpi.h"
#include "firmware/e820.h"
#include "tests/check_main.h"
#include "vmm/layout.h"

static uint64_t ram_total(const struct e820_entry *e, int n)
{
    uint64_t t = 0;
    for (int i = 0; i < n; i++)
        if (e[i].type == E820_RAM)
            t += e[i].size;
    return t;
}

static void check_sorted(const struct e820_entry *e, int n)
{
    for (int i = 1; i < n; i++)
        ck_assert_uint_le(e[i - 1].addr + e[i - 1].size, e[i].addr);
}

START_TEST(e820_sizes)
{
    static const uint64_t sizes[] = { 128ULL << 20, 1ULL << 30, 3ULL << 30, (3ULL << 30) + 4096, 8ULL << 30 };
    const uint64_t first_mib_hole = 0x100000 - LAYOUT_EBDA;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct e820_entry e[16];
        int n = e820_build(sizes[i], e, 16);
        ck_assert_int_gt(n, 0);
        check_sorted(e, n);
        ck_assert_uint_eq(ram_total(e, n), sizes[i] - first_mib_hole);
        for (int j = 0; j < n; j++) {
            if (e[j].type != E820_RAM)
                continue;
            /* no RAM in the VGA/BIOS area or the PCI hole */
            ck_assert(e[j].addr + e[j].size <= 0xa0000 || e[j].addr >= 0x100000);
            ck_assert(e[j].addr + e[j].size <= LAYOUT_MMIO_START || e[j].addr >= LAYOUT_4G);
        }
        bool high = sizes[i] > LAYOUT_MMIO_START;
        ck_assert_int_eq(e[n - 1].addr == LAYOUT_4G, high);
    }
}
END_TEST

START_TEST(e820_errors)
{
    struct e820_entry e[16];
    ck_assert_int_eq(e820_build(1 << 20, e, 16), -EINVAL);
    ck_assert_int_eq(e820_build(1ULL << 30, e, 2), -ENOSPC);
}
END_TEST

static struct acpi_config cfg(unsigned ncpus, bool pci)
{
    return (struct acpi_config){
        .ncpus = ncpus,
        .lapic_addr = LAYOUT_LAPIC,
        .ioapic_addr = LAYOUT_IOAPIC,
        .pm1a_evt_port = PORT_PM1A_EVT,
        .pm1a_cnt_port = PORT_PM1A_CNT,
        .pm_tmr_port = PORT_PM_TMR,
        .sci_irq = 9,
        .reset_port = PORT_RESET,
        .reset_value = 6,
        .s5_slp_typ = 5,
        .have_pci = pci,
        .ecam_base = LAYOUT_ECAM_BASE,
        .ecam_end_bus = 0,
        .pci_mmio_start = 0xc0000000,
        .pci_mmio_end = 0xe0000000,
        .pci_mmio64_start = LAYOUT_PCI_MMIO64,
        .pci_mmio64_end = LAYOUT_PCI_MMIO64 + (1ULL << 36),
        .pvpanic_port = PORT_PVPANIC,
        .com1_port = PORT_COM1,
        .com1_irq = 4,
    };
}

#define GPA 0xe0000
static uint8_t tables[65536];

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static const uint8_t *at(uint64_t gpa, int used)
{
    ck_assert_uint_ge(gpa, GPA);
    ck_assert_uint_lt(gpa - GPA, (uint64_t)used);
    return tables + (gpa - GPA);
}

/* Finds a table by signature through the XSDT, checking every checksum on the way. */
static const uint8_t *find(const char *sig, int used)
{
    const uint8_t *rsdp = tables;
    const uint8_t *xsdt = at(rd64(rsdp + 24), used);
    ck_assert_uint_eq(acpi_checksum(xsdt, rd32(xsdt + 4)), 0);
    for (uint32_t off = 36; off < rd32(xsdt + 4); off += 8) {
        const uint8_t *t = at(rd64(xsdt + off), used);
        ck_assert_uint_le((uint64_t)(t - tables) + rd32(t + 4), (uint64_t)used);
        ck_assert_msg(acpi_checksum(t, rd32(t + 4)) == 0, "%.4s checksum", t);
        if (!memcmp(t, sig, 4))
            return t;
    }
    return NULL;
}

START_TEST(acpi_checksums_and_pointers)
{
    struct acpi_config c = cfg(2, false);
    int used = acpi_build(&c, tables, sizeof(tables), GPA);
    ck_assert_int_gt(used, 0);
    ck_assert(!memcmp(tables, "RSD PTR ", 8));
    ck_assert_uint_eq(acpi_checksum(tables, 20), 0);
    ck_assert_uint_eq(acpi_checksum(tables, 36), 0);
    ck_assert_uint_eq(tables[15], 2);
    const uint8_t *rsdt = at(rd32(tables + 16), used);
    ck_assert(!memcmp(rsdt, "RSDT", 4));
    ck_assert_uint_eq(acpi_checksum(rsdt, rd32(rsdt + 4)), 0);
    const uint8_t *fadt = find("FACP", used);
    ck_assert_ptr_nonnull(fadt);
    const uint8_t *dsdt = at(rd64(fadt + 140), used);
    ck_assert(!memcmp(dsdt, "DSDT", 4));
    ck_assert_uint_eq(acpi_checksum(dsdt, rd32(dsdt + 4)), 0);
    ck_assert(!memcmp(at(rd32(fadt + 36), used), "FACS", 4));
    ck_assert_uint_eq(rd32(fadt + 64), PORT_PM1A_CNT);
    ck_assert_uint_eq(fadt[89], 2);
    ck_assert_uint_eq(rd64(fadt + 116 + 4), PORT_RESET);
    ck_assert_uint_eq(fadt[128], 6);
    ck_assert(rd32(fadt + 112) & (1u << 10)); /* RESET_REG_SUP */
    ck_assert_ptr_null(find("MCFG", used));
}
END_TEST

/* Decodes \_S5's first element the way an OS does: NameOp "_S5_" PackageOp ... */
START_TEST(acpi_s5)
{
    struct acpi_config c = cfg(1, false);
    int used = acpi_build(&c, tables, sizeof(tables), GPA);
    const uint8_t *fadt = find("FACP", used), *dsdt = at(rd64(fadt + 140), used);
    const uint8_t *p = memmem(dsdt, rd32(dsdt + 4), "_S5_", 4);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p[-1], '\\');
    ck_assert_uint_eq(p[4], 0x12); /* PackageOp */
    ck_assert_uint_eq(p[6], 4);    /* four elements */
    ck_assert_uint_eq(p[7], 0x0a); /* BytePrefix */
    ck_assert_uint_eq(p[8], 5);    /* SLP_TYPa */
}
END_TEST

static unsigned madt_lapics(const uint8_t *madt)
{
    unsigned n = 0;
    for (uint32_t off = 44; off < rd32(madt + 4); off += madt[off + 1]) {
        ck_assert_uint_gt(madt[off + 1], 0);
        if ((madt[off] == 0 && (rd32(madt + off + 4) & 1)) || (madt[off] == 9 && (rd32(madt + off + 8) & 1)))
            n++;
    }
    return n;
}

START_TEST(acpi_madt_per_cpu)
{
    static const unsigned counts[] = { 1, 2, 4, 255, 300 };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        struct acpi_config c = cfg(counts[i], true);
        int used = acpi_build(&c, tables, sizeof(tables), GPA);
        ck_assert_int_gt(used, 0);
        const uint8_t *madt = find("APIC", used);
        ck_assert_ptr_nonnull(madt);
        ck_assert_uint_eq(madt_lapics(madt), counts[i]);
        ck_assert_ptr_nonnull(find("MCFG", used));
    }
}
END_TEST

START_TEST(acpi_no_space)
{
    struct acpi_config c = cfg(4, true);
    ck_assert_int_eq(acpi_build(&c, tables, 200, GPA), -ENOSPC);
    c.ncpus = 0;
    ck_assert_int_eq(acpi_build(&c, tables, sizeof(tables), GPA), -EINVAL);
}
END_TEST

/* iasl disassembles what we built without complaint: an independent reading of the AML. */
START_TEST(acpi_iasl)
{
    if (system("command -v iasl >/dev/null 2>&1") != 0) {
        printf("SKIP: acpi_iasl: iasl is not installed\n");
        return;
    }
    struct acpi_config c = cfg(2, true);
    int used = acpi_build(&c, tables, sizeof(tables), GPA);
    const uint8_t *fadt = find("FACP", used), *dsdt = at(rd64(fadt + 140), used);
    char dir[] = "/tmp/kvmbox-iasl.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *names[] = { "dsdt", "facp", "apic", "mcfg" };
    const uint8_t *tabs[] = { dsdt, fadt, find("APIC", used), find("MCFG", used) };
    for (int i = 0; i < 4; i++) {
        char path[128], cmd[512];
        snprintf(path, sizeof(path), "%s/%s.dat", dir, names[i]);
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        fwrite(tabs[i], 1, rd32(tabs[i] + 4), f);
        fclose(f);
        snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat >%s.log 2>&1 && ! grep -qi 'error' %s.dsl", dir,
                 names[i], names[i], names[i]);
        ck_assert_msg(system(cmd) == 0, "iasl -d %s failed", names[i]);
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "grep -q 'PNP0A08' %s/dsdt.dsl && grep -q '_S5_' %s/dsdt.dsl && grep -q QEMU0001 %s/dsdt.dsl",
             dir, dir, dir);
    ck_assert_msg(system(cmd) == 0, "DSDT disassembly lacks the expected objects");
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("firmware");
    TCase *tc = tcase_create("tables");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, e820_sizes);
    tcase_add_test(tc, e820_errors);
    tcase_add_test(tc, acpi_checksums_and_pointers);
    tcase_add_test(tc, acpi_s5);
    tcase_add_test(tc, acpi_madt_per_cpu);
    tcase_add_test(tc, acpi_no_space);
    tcase_add_test(tc, acpi_iasl);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
