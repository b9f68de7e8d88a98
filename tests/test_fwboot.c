/* Unit tests for firmware boot: the fw_cfg items and directory, fw_cfg DMA against guest
 * memory, the ACPI table loader (applied here as firmware would, then the tables checked),
 * SMBIOS, the CD-ROM command decoder (including hostile CDBs), firmware image and ISO
 * checks, the boot order file, the no-boot watcher and the new run options. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "devices/fw_cfg.h"
#include "firmware/acpi.h"
#include "firmware/fw_cfg_items.h"
#include "firmware/smbios.h"
#include "firmware/table_loader.h"
#include "tests/check_main.h"
#include "virtio/scsi.h"
#include "virtio/scsi_cdb.h"
#include "vmm/boot_firmware.h"
#include "vmm/config.h"
#include "vmm/fw_setup.h"
#include "vmm/guest_mem.h"
#include "vmm/state.h"
#include "vmm/vm.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint8_t sum8(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

/* ---- fw_cfg items ---- */

START_TEST(items_and_directory)
{
    struct fw_cfg_items it;
    fw_cfg_items_init(&it);
    ck_assert_int_eq(fw_cfg_set(&it, FW_CFG_SIGNATURE, "QEMU", 4), 0);
    ck_assert_int_eq(fw_cfg_set(&it, FW_CFG_FILE_DIR, "x", 1), -EINVAL);
    ck_assert_int_eq(fw_cfg_set(&it, FW_CFG_FILE_FIRST, "x", 1), -EINVAL);
    uint8_t buf[8];
    ck_assert_uint_eq(fw_cfg_read(&it, FW_CFG_SIGNATURE, 2, buf, 8), 2);
    ck_assert_mem_eq(buf, "MU\0\0\0\0\0\0", 8);                /* past the end: zeroes */
    ck_assert_uint_eq(fw_cfg_read(&it, 0x7fff, 0, buf, 8), 0); /* absent item: zeroes */
    ck_assert_uint_eq(fw_cfg_read(&it, FW_CFG_SIGNATURE, 0xffffffffu, buf, 8), 0);
    ck_assert_int_eq(fw_cfg_add_file(&it, "etc/zeta", "abc", 3), FW_CFG_FILE_FIRST);
    ck_assert_int_eq(fw_cfg_add_file(&it, "bootorder", "", 0), FW_CFG_FILE_FIRST + 1);
    ck_assert_int_eq(fw_cfg_add_file(&it, "etc/zeta", "x", 1), -EEXIST);
    ck_assert_int_eq(fw_cfg_add_file(&it, "", "x", 1), -EINVAL);
    char longname[80];
    memset(longname, 'a', sizeof(longname) - 1), longname[79] = 0;
    ck_assert_int_eq(fw_cfg_add_file(&it, longname, "x", 1), -EINVAL);
    /* directory: be32 count, then sorted 64-byte entries with be32 size and be16 select */
    uint8_t dir[4 + 2 * 64];
    ck_assert_uint_eq(fw_cfg_read(&it, FW_CFG_FILE_DIR, 0, dir, sizeof(dir)), sizeof(dir));
    ck_assert_uint_eq(be32(dir), 2);
    ck_assert_str_eq((char *)dir + 4 + 8, "bootorder");
    ck_assert_uint_eq(be32(dir + 4), 0);
    ck_assert_uint_eq((dir[4 + 4] << 8) | dir[4 + 5], FW_CFG_FILE_FIRST + 1);
    ck_assert_str_eq((char *)dir + 68 + 8, "etc/zeta");
    ck_assert_uint_eq(be32(dir + 68), 3);
    ck_assert_int_eq(fw_cfg_replace_file(&it, "etc/zeta", "longer", 6), 0);
    fw_cfg_read(&it, FW_CFG_FILE_DIR, 0, dir, sizeof(dir));
    ck_assert_uint_eq(be32(dir + 68), 6);
    ck_assert_int_eq(fw_cfg_replace_file(&it, "nope", "x", 1), -ENOENT);
    ck_assert_int_eq(fw_cfg_find(&it, "bootorder"), FW_CFG_FILE_FIRST + 1);
    char name[16];
    int r = 0;
    for (int i = 0; r >= 0; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        r = fw_cfg_add_file(&it, name, "x", 1);
    }
    ck_assert_int_eq(r, -ENOSPC);
    fw_cfg_items_free(&it);
}
END_TEST

/* ---- fw_cfg DMA ---- */

static uint8_t ram[1 << 20];

static void put_access(uint64_t gpa, uint32_t control, uint32_t len, uint64_t addr)
{
    uint8_t *a = ram + gpa;
    uint32_t v[4] = { control, len, (uint32_t)(addr >> 32), (uint32_t)addr };
    for (int i = 0; i < 4; i++)
        a[4 * i] = (uint8_t)(v[i] >> 24), a[4 * i + 1] = (uint8_t)(v[i] >> 16),
              a[4 * i + 2] = (uint8_t)(v[i] >> 8), a[4 * i + 3] = (uint8_t)v[i];
}

START_TEST(dma_requests)
{
    struct guest_mem gm;
    gm_layout(&gm, ram, sizeof(ram));
    struct fw_cfg_items it;
    fw_cfg_items_init(&it);
    ck_assert_int_eq(fw_cfg_set(&it, FW_CFG_SIGNATURE, "QEMU", 4), 0);
    uint16_t key = 0;
    uint32_t off = 0;
    memset(ram, 0xaa, 0x2000);
    put_access(0x100, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (FW_CFG_SIGNATURE << 16), 6, 0x1000);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), 0);
    ck_assert_mem_eq(ram + 0x1000, "QEMU\0\0", 6); /* the rest of the buffer zero-filled */
    ck_assert_uint_eq(ram[0x1006], 0xaa);
    ck_assert_uint_eq(off, 6);
    put_access(0x100, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP, 2, 0);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), 0);
    put_access(0x100, FW_CFG_DMA_CTL_READ, 2, 0x1000);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), 0);
    ck_assert_mem_eq(ram + 0x1000, "MU", 2);
    /* hostile: a buffer past the end of RAM, an overflowing one, the structure outside RAM,
     * writes: each fails that request with the error bit */
    put_access(0x100, FW_CFG_DMA_CTL_READ, 16, sizeof(ram) - 8);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), FW_CFG_DMA_CTL_ERROR);
    put_access(0x100, FW_CFG_DMA_CTL_READ, 0xffffffffu, 0xfffffffffffff000ULL);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), FW_CFG_DMA_CTL_ERROR);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, sizeof(ram) - 4), FW_CFG_DMA_CTL_ERROR);
    put_access(0x100, FW_CFG_DMA_CTL_WRITE, 4, 0x1000);
    ck_assert_uint_eq(fw_cfg_dma_run(&gm, &it, &key, &off, 0x100), FW_CFG_DMA_CTL_ERROR);
    put_access(0x100, FW_CFG_DMA_CTL_SKIP, 0xffffffffu, 0); /* offset saturates */
    fw_cfg_dma_run(&gm, &it, &key, &off, 0x100);
    fw_cfg_dma_run(&gm, &it, &key, &off, 0x100);
    ck_assert_uint_eq(off, 0xffffffffu);
    fw_cfg_items_free(&it);
}
END_TEST

/* ---- ACPI through the table loader ---- */

static struct acpi_config acpi_cfg(void)
{
    return (struct acpi_config){
        .ncpus = 3,
        .lapic_addr = 0xfee00000,
        .ioapic_addr = 0xfec00000,
        .pm1a_evt_port = 0x600,
        .pm1a_cnt_port = 0x604,
        .pm_tmr_port = 0x608,
        .sci_irq = 9,
        .reset_port = 0xcf9,
        .reset_value = 6,
        .s5_slp_typ = 5,
        .have_pci = true,
        .ecam_base = 0xe0000000,
        .pci_mmio_start = 0xe0100000,
        .pci_mmio_end = 0xfec00000,
        .pci_mmio64_start = 1ULL << 36,
        .pci_mmio64_end = 2ULL << 36,
        .com1_port = 0x3f8,
        .com1_irq = 4,
    };
}

/* Applies loader commands as SeaBIOS's romfile_loader does, with the RSDP file at RSDP_GPA and
 * the tables at TABLES_GPA, both inside ram[]. */
static void apply_loader(const uint8_t *cmds, int len, const uint8_t *blob, uint32_t rsdp_len,
                         uint32_t blob_len, uint64_t rsdp_gpa, uint64_t tables_gpa)
{
    memcpy(ram + rsdp_gpa, blob, rsdp_len);
    memcpy(ram + tables_gpa, blob, blob_len);
    memset(ram + tables_gpa, 0, rsdp_len);
    for (int o = 0; o < len; o += TL_CMD_SIZE) {
        const uint8_t *c = cmds + o;
        uint32_t cmd = le32(c);
        if (cmd == TL_ALLOCATE) {
            ck_assert(!strcmp((char *)c + 4, TL_RSDP_FILE) ? c[64] == TL_ZONE_FSEG : c[64] == TL_ZONE_HIGH);
        } else if (cmd == TL_ADD_POINTER) {
            ck_assert_str_eq((char *)c + 60, TL_TABLES_FILE);
            uint64_t base = !strcmp((char *)c + 4, TL_RSDP_FILE) ? rsdp_gpa : tables_gpa;
            uint8_t *p = ram + base + le32(c + 116);
            uint64_t v = 0;
            memcpy(&v, p, c[120]);
            v += tables_gpa;
            memcpy(p, &v, c[120]);
        } else {
            ck_assert_uint_eq(cmd, TL_ADD_CHECKSUM);
            uint64_t base = !strcmp((char *)c + 4, TL_RSDP_FILE) ? rsdp_gpa : tables_gpa;
            uint8_t *f = ram + base;
            f[le32(c + 60)] = (uint8_t)(f[le32(c + 60)] - sum8(f + le32(c + 64), le32(c + 68)));
        }
    }
}

START_TEST(table_loader_relocates)
{
    struct acpi_config ac = acpi_cfg();
    static uint8_t blob[65536];
    struct acpi_fixups fix;
    int len = acpi_build_fixups(&ac, blob, sizeof(blob), 0, &fix);
    ck_assert_int_gt(len, 0);
    ck_assert_uint_eq(fix.rsdp_len, 36);
    static uint8_t cmds[128 * 64];
    int clen = table_loader_build(&fix, (size_t)len, cmds, 64);
    ck_assert_int_gt(clen, 0);
    ck_assert_int_eq(clen % TL_CMD_SIZE, 0);
    memset(ram, 0, sizeof(ram));
    const uint64_t rsdp = 0xf5a40, tables = 0x80000;
    apply_loader(cmds, clen, blob, fix.rsdp_len, (uint32_t)len, rsdp, tables);
    const uint8_t *r = ram + rsdp;
    ck_assert_mem_eq(r, "RSD PTR ", 8);
    ck_assert_uint_eq(sum8(r, 20), 0);
    ck_assert_uint_eq(sum8(r, 36), 0);
    uint64_t xsdt = 0;
    memcpy(&xsdt, r + 24, 8);
    ck_assert_uint_ge(xsdt, tables);
    ck_assert_mem_eq(ram + xsdt, "XSDT", 4);
    ck_assert_uint_eq(sum8(ram + xsdt, le32(ram + xsdt + 4)), 0);
    ck_assert_mem_eq(ram + le32(r + 16), "RSDT", 4);
    /* every table the XSDT names is there with a right checksum; the FADT's pointers too */
    unsigned n = (le32(ram + xsdt + 4) - 36) / 8;
    ck_assert_uint_eq(n, 3);
    for (unsigned i = 0; i < n; i++) {
        uint64_t t = 0;
        memcpy(&t, ram + xsdt + 36 + 8 * i, 8);
        ck_assert_uint_lt(t, tables + (uint64_t)len);
        ck_assert_uint_eq(sum8(ram + t, le32(ram + t + 4)), 0);
        if (!memcmp(ram + t, "FACP", 4)) {
            ck_assert_mem_eq(ram + le32(ram + t + 36), "FACS", 4);
            ck_assert_mem_eq(ram + le32(ram + t + 40), "DSDT", 4);
            uint64_t xd = 0;
            memcpy(&xd, ram + t + 140, 8);
            ck_assert_uint_eq(xd, le32(ram + t + 40));
        }
    }
    /* hostile fixups are refused, not followed */
    struct acpi_fixups bad = fix;
    bad.ptr[0].off = (uint32_t)len - 2;
    ck_assert_int_eq(table_loader_build(&bad, (size_t)len, cmds, 64), -EINVAL);
    bad = fix;
    bad.sum[0].len = 0xffffffffu;
    ck_assert_int_eq(table_loader_build(&bad, (size_t)len, cmds, 64), -EINVAL);
    bad = fix;
    bad.ptr[0].size = 3;
    ck_assert_int_eq(table_loader_build(&bad, (size_t)len, cmds, 64), -EINVAL);
    ck_assert_int_eq(table_loader_build(&fix, (size_t)len, cmds, 3), -ENOSPC);
}
END_TEST

/* ---- SMBIOS ---- */

START_TEST(smbios_tables)
{
    const uint8_t uuid[16] = { 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8 };
    struct smbios_info in = { .uuid = uuid, .name = "web-1", .version = "0.1.0" };
    uint8_t t[512], a[SMBIOS_ANCHOR_LEN];
    int len = smbios_build(&in, t, sizeof(t), a);
    ck_assert_int_gt(len, 0);
    ck_assert_mem_eq(a, "_SM_", 4);
    ck_assert_uint_eq(sum8(a, SMBIOS_ANCHOR_LEN), 0);
    ck_assert_mem_eq(a + 16, "_DMI_", 5);
    ck_assert_uint_eq(sum8(a + 16, 15), 0);
    ck_assert_uint_eq(a[22] | a[23] << 8, (unsigned)len);
    ck_assert_uint_eq(a[28] | a[29] << 8, 3);
    /* walk: type 1 with the UUID's first fields little-endian and the name; then 32; 127 */
    ck_assert_uint_eq(t[0], 1);
    ck_assert_uint_eq(t[8], 0x78);
    ck_assert_uint_eq(t[11], 0x12);
    ck_assert_uint_eq(t[12], 0xbc);
    ck_assert_uint_eq(t[14], 0xf0);
    ck_assert_uint_eq(t[16], 1);
    const char *s = (const char *)t + t[1];
    int found = 0;
    for (int i = 1; *s; i++, s += strlen(s) + 1)
        if (i == t[7] && !strcmp(s, "web-1"))
            found = 1;
    ck_assert(found);
    const uint8_t *p = (const uint8_t *)s + 1;
    ck_assert_uint_eq(p[0], 32);
    ck_assert_uint_eq(p[p[1]], 0);
    ck_assert_uint_eq(p[p[1] + 1], 0);
    p += p[1] + 2;
    ck_assert_uint_eq(p[0], 127);
    ck_assert_int_eq(smbios_build(&in, t, 20, a), -ENOSPC);
}
END_TEST

/* ---- the CD-ROM command decoder ---- */

static struct scsi_cd cd;
static struct scsi_reply rep;

static void cmd(const uint8_t *c, size_t len)
{
    scsi_cd_command(&cd, c, len, &rep);
}

static void want_sense(uint8_t key, uint8_t asc)
{
    ck_assert_uint_eq(rep.status, SCSI_CHECK_CONDITION);
    ck_assert_uint_eq(rep.sense[0], 0x70);
    ck_assert_uint_eq(rep.sense[2], key);
    ck_assert_uint_eq(rep.sense[12], asc);
    ck_assert(!rep.read);
}

START_TEST(cd_commands)
{
    scsi_cd_init(&cd, 100 * CD_BLOCK + 100, "0.1");
    const uint8_t inq[6] = { 0x12, 0, 0, 0, 36, 0 };
    cmd(inq, 6);
    ck_assert_uint_eq(rep.status, SCSI_GOOD);
    ck_assert_uint_eq(rep.len, 36);
    ck_assert_uint_eq(rep.data[0], 5);
    ck_assert_uint_eq(rep.data[1], 0x80);
    const uint8_t inq_short[6] = { 0x12, 0, 0, 0, 5, 0 };
    cmd(inq_short, 6);
    ck_assert_uint_eq(rep.len, 5); /* allocation length honoured */
    const uint8_t cap[10] = { 0x25 };
    cmd(cap, 10);
    ck_assert_uint_eq(be32(rep.data), 99);
    ck_assert_uint_eq(be32(rep.data + 4), 2048);
    const uint8_t rd[10] = { 0x28, 0, 0, 0, 0, 98, 0, 0, 2, 0 };
    cmd(rd, 10);
    ck_assert(rep.read);
    ck_assert_uint_eq(rep.lba, 98);
    ck_assert_uint_eq(rep.nblocks, 2);
    const uint8_t rd_past[10] = { 0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0 };
    cmd(rd_past, 10);
    want_sense(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    const uint8_t rs[6] = { 0x03, 0, 0, 0, 18, 0 }; /* the last error, once */
    cmd(rs, 6);
    ck_assert_uint_eq(rep.status, SCSI_GOOD);
    ck_assert_uint_eq(rep.data[2], SK_ILLEGAL_REQUEST);
    ck_assert_uint_eq(rep.data[12], ASC_LBA_OUT_OF_RANGE);
    cmd(rs, 6);
    ck_assert_uint_eq(rep.data[2], 0);
    const uint8_t rd16[16] = { 0x88, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0x20, 0, 0 };
    cmd(rd16, 16); /* LBA + count would overflow */
    want_sense(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    const uint8_t rd12[12] = { 0xa8, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0 };
    cmd(rd12, 12);
    want_sense(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    cmd(rd, 6); /* READ(10) cut to 6 bytes */
    want_sense(SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
    const uint8_t unknown[10] = { 0x2a }; /* WRITE(10) on a CD */
    cmd(unknown, 10);
    want_sense(SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
    const uint8_t ms[10] = { 0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 128, 0 };
    cmd(ms, 10);
    ck_assert_uint_eq(rep.status, SCSI_GOOD);
    ck_assert_uint_eq(rep.data[8], 0x2a);
    ck_assert_uint_eq((rep.data[0] << 8 | rep.data[1]) + 2, rep.len);
    const uint8_t ms_bad[6] = { 0x1a, 0, 0x08, 0, 64, 0 };
    cmd(ms_bad, 6);
    want_sense(SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    const uint8_t toc[10] = { 0x43, 0x02, 0, 0, 0, 0, 0, 0, 64, 0 };
    cmd(toc, 10);
    ck_assert_uint_eq(rep.len, 20);
    ck_assert_uint_eq(rep.data[6], 1);
    ck_assert_uint_eq(rep.data[14], 0xaa);
    ck_assert_uint_eq(rep.data[9], 0);
    ck_assert_uint_eq(rep.data[10], 2); /* MSF 00:02:00 */
    ck_assert_uint_eq(rep.data[11], 0);
    const uint8_t gesn_async[10] = { 0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0 };
    cmd(gesn_async, 10);
    want_sense(SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    const uint8_t gesn[10] = { 0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0 };
    cmd(gesn, 10);
    ck_assert_uint_eq(rep.len, 8);
    ck_assert_uint_eq(rep.data[5], 0x02);
    const uint8_t prevent[6] = { 0x1e, 0, 0, 0, 1, 0 }, eject[6] = { 0x1b, 0, 0, 0, 2, 0 };
    cmd(prevent, 6);
    cmd(eject, 6);
    ck_assert_uint_eq(rep.status, SCSI_CHECK_CONDITION);
    const uint8_t luns[12] = { 0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0 };
    cmd(luns, 12);
    ck_assert_uint_eq(rep.len, 16);
    ck_assert_uint_eq(be32(rep.data), 8);
    scsi_no_lun_command(inq, 6, &rep);
    ck_assert_uint_eq(rep.data[0], 0x7f);
    scsi_no_lun_command(cap, 10, &rep);
    ck_assert_uint_eq(rep.status, SCSI_CHECK_CONDITION);
    ck_assert_uint_eq(rep.sense[12], ASC_LUN_NOT_SUPPORTED);
}
END_TEST

START_TEST(cd_hostile_cdbs)
{
    /* Every operation code with random fields and every length: a reply within bounds or a
     * CHECK CONDITION, reads inside the medium, never anything else. */
    scsi_cd_init(&cd, 1000 * CD_BLOCK, "0.1");
    srand(1);
    uint8_t c[32];
    for (int op = 0; op < 256; op++)
        for (int k = 0; k < 200; k++) {
            for (size_t i = 0; i < sizeof(c); i++)
                c[i] = (uint8_t)rand();
            c[0] = (uint8_t)op;
            size_t len = 1 + (size_t)(rand() % 32);
            cmd(c, len);
            ck_assert(rep.status == SCSI_GOOD || rep.status == SCSI_CHECK_CONDITION);
            ck_assert_uint_le(rep.len, SCSI_REPLY_MAX);
            if (rep.read)
                ck_assert(rep.lba + rep.nblocks <= cd.blocks);
        }
}
END_TEST

/* ---- images, boot order, watcher, options ---- */

START_TEST(image_checks)
{
    static uint8_t img[256 << 10];
    ck_assert_int_eq(fw_image_check(img, sizeof(img)), -ENOEXEC); /* zeroes: no reset vector */
    img[sizeof(img) - 16] = 0xea;
    ck_assert_int_eq(fw_image_check(img, sizeof(img)), 0);
    ck_assert_int_eq(fw_image_check(img, sizeof(img) - 4096), -ENOEXEC); /* not 64 KiB-sized */
    static uint8_t iso[ISO9660_PROBE_LEN];
    ck_assert_int_eq(iso9660_check(iso, sizeof(iso)), -ENOEXEC);
    memcpy(iso + 32769, "CD001", 5);
    ck_assert_int_eq(iso9660_check(iso, sizeof(iso)), 0);
    ck_assert_int_eq(iso9660_check(iso, 1000), -ENOEXEC);
}
END_TEST

/* The "firmware" section of a saved state, saved from FW into W and parsed into FILE. */
static const struct st_section *fw_saved(const struct fw_image *fw, struct st_writer *w, struct st_file *file)
{
    uint64_t off;
    char err[256];
    st_writer_init(w);
    fw_image_save(fw, "/fw.bin", w);
    ck_assert_int_eq(st_finish(w, 0, &off), 0);
    ck_assert_int_eq(st_parse(w->buf, w->len, file, err, sizeof(err)), 0);
    return st_find(file, "firmware", 0);
}

/* The firmware's saved state: the image's fingerprint (a changed file is refused with
 * -ESTALE), and the mapped image as the guest left it, saved only when it differs. */
START_TEST(image_saved_state)
{
    enum { SIZE = 64 << 10 };
    static uint8_t pristine[SIZE], host[SIZE];
    struct fw_image fw = { .pristine = pristine, .host = host, .size = SIZE };
    for (unsigned i = 0; i < SIZE; i++)
        pristine[i] = (uint8_t)(i * 7);
    memcpy(host, pristine, SIZE);
    struct st_writer w;
    struct st_file f;
    char err[256] = "";
    uint32_t len;
    /* unchanged: the fingerprint only, and the load fills the mapped image */
    const struct st_section *s = fw_saved(&fw, &w, &f);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_null(st_field(s, "rom", &len));
    memset(host, 0, SIZE);
    ck_assert_int_eq(fw_image_load_state(&fw, "/fw.bin", s, err, sizeof(err)), 0);
    ck_assert_mem_eq(host, pristine, SIZE);
    /* the file changed by one byte since: refused, naming it */
    pristine[100] ^= 1;
    ck_assert_int_eq(fw_image_load_state(&fw, "/fw.bin", s, err, sizeof(err)), -ESTALE);
    ck_assert_ptr_nonnull(strstr(err, "/fw.bin changed since"));
    pristine[100] ^= 1;
    st_free(&f), st_writer_free(&w);
    /* the guest wrote the image (no read-only memory): its bytes come back */
    host[5] = 0x55;
    s = fw_saved(&fw, &w, &f);
    ck_assert_ptr_nonnull(st_field(s, "rom", &len));
    ck_assert_uint_eq(len, SIZE);
    memcpy(host, pristine, SIZE);
    ck_assert_int_eq(fw_image_load_state(&fw, "/fw.bin", s, err, sizeof(err)), 0);
    ck_assert_uint_eq(host[5], 0x55);
    ck_assert_mem_eq(host + 6, pristine + 6, SIZE - 6);
    st_free(&f), st_writer_free(&w);
    /* a saved image of another size than the fingerprint's: corrupt */
    st_writer_init(&w);
    st_begin(&w, "firmware", 0, 1);
    st_put_u64(&w, "size", SIZE);
    uLong c = crc32(crc32(0, Z_NULL, 0), pristine, SIZE);
    st_put_u32(&w, "crc32", (uint32_t)c);
    st_put(&w, "rom", host, SIZE / 2);
    st_end(&w);
    uint64_t off;
    ck_assert_int_eq(st_finish(&w, 0, &off), 0);
    ck_assert_int_eq(st_parse(w.buf, w.len, &f, err, sizeof(err)), 0);
    ck_assert_int_eq(fw_image_load_state(&fw, "/fw.bin", &f.sections[0], err, sizeof(err)), -EBADMSG);
    st_free(&f), st_writer_free(&w);
}
END_TEST

static bool starts(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

START_TEST(bootorder_file)
{
    static struct vm vm;
    memset(&vm, 0, sizeof(vm));
    vm.cfg.ndisks = 2, vm.cfg.ncdroms = 1;
    vm.disk_info[0].slot = 1, vm.disk_info[1].slot = 2, vm.cdrom_info[0].slot = 3;
    char out[FW_BOOTORDER_MAX];
    ck_assert_int_gt(fw_bootorder(&vm, NULL, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/pci@i0cf8/scsi@1/disk@0,0\n/pci@i0cf8/scsi@2/disk@0,0\n"
                          "/pci@i0cf8/scsi@3/channel@0/disk@0,0\nHALT");
    const uint8_t cd_first[] = { KVMBOX_BOOT_CDROM, KVMBOX_BOOT_NET, 0 };
    fw_bootorder(&vm, cd_first, out, sizeof(out));
    ck_assert(starts(out, "/pci@i0cf8/scsi@3/channel@0/disk@0,0\n/pci@i0cf8/scsi@1/"));
    vm.cfg.disks[1].bootindex = 1; /* bootindex beats the order */
    fw_bootorder(&vm, cd_first, out, sizeof(out));
    ck_assert(starts(out, "/pci@i0cf8/scsi@2/disk@0,0\n/pci@i0cf8/scsi@3/"));
    ck_assert_int_eq(fw_bootorder(&vm, NULL, out, 20), -ENOSPC);
}
END_TEST

START_TEST(no_boot_watch)
{
    struct fw_watch w = { 0 };
    ck_assert(!fw_watch_feed(&w, (const uint8_t *)"Booting from Hard Disk...\r\nNo boot", 34));
    ck_assert(fw_watch_feed(&w, (const uint8_t *)"able device.  Retrying", 22));
    ck_assert(!fw_watch_feed(&w, (const uint8_t *)"NNo bootable devic", 18));
    ck_assert(fw_watch_feed(&w, (const uint8_t *)"e", 1));
}
END_TEST

START_TEST(run_options)
{
    struct kvmbox_config c;
    char err[256];
    kvmbox_config_init(&c);
    ck_assert_int_eq(config_parse_boot("cdrom,disk,net", &c, err, sizeof(err)), 0);
    ck_assert_uint_eq(c.boot_order[0], KVMBOX_BOOT_CDROM);
    ck_assert_uint_eq(c.boot_order[2], KVMBOX_BOOT_NET);
    ck_assert_uint_eq(c.boot_order[3], 0);
    ck_assert_int_eq(config_parse_boot("once=d", &c, err, sizeof(err)), 0);
    ck_assert_uint_eq(c.boot_once[0], KVMBOX_BOOT_CDROM);
    ck_assert_uint_eq(c.boot_once[1], 0);
    ck_assert_int_eq(config_parse_boot("order=dc", &c, err, sizeof(err)), -EINVAL); /* one per word */
    ck_assert_int_eq(config_parse_boot("disk,disk", &c, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(config_parse_boot("floppy", &c, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(config_parse_boot("", &c, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(config_parse_boot("menu=on", &c, err, sizeof(err)), 0);
    ck_assert(c.boot_menu);
    ck_assert_int_eq(config_parse_boot("menu=maybe", &c, err, sizeof(err)), -EINVAL);
    struct kvmbox_cdrom cd;
    char buf[256];
    ck_assert_int_eq(config_parse_cdrom("a,,b.iso,bootindex=2", &cd, buf, sizeof(buf), err, sizeof(err)), 0);
    ck_assert_str_eq(cd.path, "a,b.iso");
    ck_assert_uint_eq(cd.bootindex, 2);
    ck_assert_int_eq(config_parse_cdrom("x.iso,readonly=on", &cd, buf, sizeof(buf), err, sizeof(err)),
                     -EINVAL);
    ck_assert_int_eq(config_parse_cdrom("x.iso,bootindex=1000", &cd, buf, sizeof(buf), err, sizeof(err)),
                     -EINVAL);
    uint8_t u[16];
    ck_assert_int_eq(config_parse_uuid("12345678-9abc-def0-1234-56789abcdef0", u), 0);
    ck_assert_uint_eq(u[0], 0x12);
    ck_assert_uint_eq(u[15], 0xf0);
    ck_assert_int_eq(config_parse_uuid("12345678-9abc-def0-1234-56789abcdefg", u), -EINVAL);
    ck_assert_int_eq(config_parse_uuid("123456789abcdef0123456789abcdef01234", u), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fwboot");
    TCase *tc = tcase_create("firmware boot");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, items_and_directory);
    tcase_add_test(tc, dma_requests);
    tcase_add_test(tc, table_loader_relocates);
    tcase_add_test(tc, smbios_tables);
    tcase_add_test(tc, cd_commands);
    tcase_add_test(tc, cd_hostile_cdbs);
    tcase_add_test(tc, image_checks);
    tcase_add_test(tc, image_saved_state);
    tcase_add_test(tc, bootorder_file);
    tcase_add_test(tc, no_boot_watch);
    tcase_add_test(tc, run_options);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
