/* The fw_cfg items of a kvmbox VM booting through firmware. */
#include "vmm/fw_setup.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/fw_cfg.h"
#include "firmware/acpi.h"
#include "firmware/e820.h"
#include "firmware/smbios.h"
#include "firmware/table_loader.h"
#include "vmm/layout.h"
#include "common/util.h"
#include "vmm/vm.h"

#define KVM_TSS_RESERVED 0xfeffc000ULL /* identity-map page and TSS (vmm/kvm.c) */

/* etc/e820: RAM below and above the PCI hole, and the ranges the OS must leave alone that
 * firmware cannot know of (ECAM, KVM's TSS pages). SeaBIOS adds its own reservations (first
 * MiB, itself, the tables it allocates). */
static int add_e820(struct vm *vm, struct fw_cfg_items *it)
{
    struct e820_entry e[4];
    uint64_t low = gm_low_end(&vm->mem);
    int n = 0;
    e[n++] = (struct e820_entry){ 0, low, E820_RAM };
    e[n++] = (struct e820_entry){ LAYOUT_ECAM_BASE, LAYOUT_ECAM_SIZE, E820_RESERVED };
    e[n++] = (struct e820_entry){ KVM_TSS_RESERVED, 0x4000, E820_RESERVED };
    if (vm->mem.ram_size > low)
        e[n++] = (struct e820_entry){ LAYOUT_4G, vm->mem.ram_size - low, E820_RAM };
    int r = fw_cfg_add_file(it, "etc/e820", e, (uint32_t)(n * sizeof(e[0])));
    return r < 0 ? r : 0;
}

static int add_u16_file(struct fw_cfg_items *it, const char *name, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    int r = fw_cfg_add_file(it, name, b, sizeof(b));
    return r < 0 ? r : 0;
}

static int add_u32_file(struct fw_cfg_items *it, const char *name, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    int r = fw_cfg_add_file(it, name, b, sizeof(b));
    return r < 0 ? r : 0;
}

#define ACPI_MAX        (64u << 10)
#define LOADER_MAX_CMDS (2 + ACPI_MAX_PTRS + ACPI_MAX_SUMS)

/* The ACPI tables of vm_acpi_config(), built at address 0 so that each pointer is an offset,
 * and the loader commands that let firmware place and link them. */
static int add_acpi(struct vm *vm, struct fw_cfg_items *it)
{
    struct acpi_config ac;
    vm_acpi_config(vm, &ac);
    struct acpi_fixups fix;
    uint8_t *blob = calloc(1, ACPI_MAX), *cmds = calloc(LOADER_MAX_CMDS, TL_CMD_SIZE);
    int r = -ENOMEM, len, clen;
    if (!blob || !cmds)
        goto out;
    if ((r = len = acpi_build_fixups(&ac, blob, ACPI_MAX, 0, &fix)) < 0 ||
        (r = clen = table_loader_build(&fix, (size_t)len, cmds, LOADER_MAX_CMDS)) < 0)
        goto out;
    if ((r = fw_cfg_add_file(it, TL_RSDP_FILE, blob, fix.rsdp_len)) < 0)
        goto out;
    memset(blob, 0, fix.rsdp_len);
    if ((r = fw_cfg_add_file(it, TL_TABLES_FILE, blob, (uint32_t)len)) < 0 ||
        (r = fw_cfg_add_file(it, "etc/table-loader", cmds, (uint32_t)clen)) < 0)
        goto out;
    r = 0;
out:
    free(blob), free(cmds);
    return r;
}

static int add_smbios(struct vm *vm, struct fw_cfg_items *it)
{
    uint8_t tables[512], anchor[SMBIOS_ANCHOR_LEN];
    struct smbios_info in = { .uuid = vm->cfg.uuid, .name = vm->name, .version = KVMBOX_VERSION };
    int len = smbios_build(&in, tables, sizeof(tables), anchor);
    if (len < 0)
        return len;
    int r;
    if ((r = fw_cfg_add_file(it, "etc/smbios/smbios-tables", tables, (uint32_t)len)) < 0 ||
        (r = fw_cfg_add_file(it, "etc/smbios/smbios-anchor", anchor, sizeof(anchor))) < 0)
        return r;
    return 0;
}

/* One bootable device: its class, bootindex and OpenFirmware-style path (SeaBIOS matches
 * the paths it builds, /pci@i0cf8/ANY@SLOT and .../ANY@0/ANY@TARGET,LUN, against these). */
struct boot_dev {
    uint8_t cls;
    unsigned bootindex, seq;
    char path[64];
};

static int rank(const uint8_t *order, uint8_t cls)
{
    for (int i = 0; i < KVMBOX_BOOT_MAX && order[i]; i++)
        if (order[i] == cls)
            return i;
    /* Unnamed classes come after the named ones, disk before cdrom before net. */
    return KVMBOX_BOOT_MAX + cls;
}

static int cmp_boot(const void *a, const void *b, void *order)
{
    const struct boot_dev *x = a, *y = b;
    if (!x->bootindex != !y->bootindex)
        return x->bootindex ? -1 : 1; /* a bootindex comes first */
    if (x->bootindex != y->bootindex)
        return x->bootindex < y->bootindex ? -1 : 1;
    int rx = rank(order, x->cls), ry = rank(order, y->cls);
    if (rx != ry)
        return rx - ry;
    return (int)x->seq - (int)y->seq;
}

int fw_bootorder(const struct vm *vm, const uint8_t *order, char *out, size_t len)
{
    static const uint8_t dflt[] = { KVMBOX_BOOT_DISK, KVMBOX_BOOT_CDROM, 0 };
    struct boot_dev d[KVMBOX_MAX_DISKS + KVMBOX_MAX_CDROMS];
    unsigned n = 0;
    for (unsigned i = 0; i < vm->cfg.ndisks; i++, n++) {
        d[n] = (struct boot_dev){ KVMBOX_BOOT_DISK, vm->cfg.disks[i].bootindex, n, "" };
        snprintf(d[n].path, sizeof(d[n].path), "/pci@i0cf8/scsi@%x/disk@0,0", vm->disk_info[i].slot);
    }
    for (unsigned i = 0; i < vm->cfg.ncdroms; i++, n++) {
        d[n] = (struct boot_dev){ KVMBOX_BOOT_CDROM, vm->cfg.cdroms[i].bootindex, n, "" };
        snprintf(d[n].path, sizeof(d[n].path), "/pci@i0cf8/scsi@%x/channel@0/disk@0,0",
                 vm->cdrom_info[i].slot);
    }
    qsort_r(d, n, sizeof(d[0]), cmp_boot, (void *)(order && order[0] ? order : dflt));
    size_t used = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        int w = snprintf(out + used, len - used, "%s\n", d[i].path);
        if (w < 0 || (size_t)w >= len - used)
            return -ENOSPC;
        used += (size_t)w;
    }
    /* HALT: nothing beyond the list is tried (no floppy, no ROMs). */
    int w = snprintf(out + used, len - used, "HALT");
    if (w < 0 || (size_t)w >= len - used)
        return -ENOSPC;
    return (int)(used + (size_t)w + 1);
}

static int add_bootorder(struct vm *vm, struct fw_cfg_items *it)
{
    char text[FW_BOOTORDER_MAX];
    const uint8_t *order = vm->cfg.boot_once[0] ? vm->cfg.boot_once : vm->cfg.boot_order;
    int len = fw_bootorder(vm, order, text, sizeof(text));
    if (len < 0)
        return len;
    int r = fw_cfg_add_file(it, "bootorder", text, (uint32_t)len);
    return r < 0 ? r : 0;
}

int fw_setup_reboot(struct vm *vm)
{
    if (!vm->fw_cfg || !vm->cfg.boot_once[0])
        return 0;
    char text[FW_BOOTORDER_MAX];
    int len = fw_bootorder(vm, vm->cfg.boot_order, text, sizeof(text));
    if (len < 0)
        return len;
    return fw_cfg_update_file(vm->fw_cfg, "bootorder", text, (uint32_t)len);
}

bool fw_watch_feed(struct fw_watch *w, const uint8_t *buf, size_t len)
{
    static const char pat[] = FW_NO_BOOT_TEXT;
    bool hit = false;
    for (size_t i = 0; i < len; i++) {
        if ((char)buf[i] == pat[w->pos])
            w->pos++;
        else
            w->pos = (char)buf[i] == pat[0] ? 1 : 0;
        if (w->pos == sizeof(pat) - 1) {
            hit = true;
            w->pos = 0;
        }
    }
    return hit;
}

static int build_items(struct vm *vm, struct fw_cfg_items *it)
{
    int r;
    if ((r = fw_cfg_set(it, FW_CFG_SIGNATURE, "QEMU", 4)) < 0 ||
        (r = fw_cfg_set_u32(it, FW_CFG_ID, FW_CFG_ID_TRADITIONAL | FW_CFG_ID_DMA)) < 0 ||
        (r = fw_cfg_set(it, FW_CFG_UUID, vm->cfg.uuid, 16)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_NB_CPUS, (uint16_t)vm->ncpus)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_MAX_CPUS, (uint16_t)vm->ncpus)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_NOGRAPHIC, 1)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_BOOT_MENU, vm->cfg.boot_menu)) < 0)
        return r;
    uint64_t ram = vm->mem.ram_size;
    if ((r = fw_cfg_set(it, FW_CFG_RAM_SIZE, &ram, sizeof(ram))) < 0)
        return r;
    if ((r = add_e820(vm, it)) < 0 || (r = add_u16_file(it, "etc/boot-cpus", (uint16_t)vm->ncpus)) < 0 ||
        /* SeaBIOS's own serial console on COM1: menu and boot loader text without a display */
        (r = add_u16_file(it, "etc/sercon-port", PORT_COM1)) < 0 ||
        (r = add_u32_file(it, "etc/boot-fail-wait", 1000)) < 0 || (r = add_acpi(vm, it)) < 0 ||
        (r = add_smbios(vm, it)) < 0 || (r = add_bootorder(vm, it)) < 0)
        return r;
    return 0;
}

int fw_setup(struct vm *vm, char *err, size_t errlen)
{
    const char *log = getenv("KVMBOX_FW_DEBUG");
    if (log && *log) {
        int d = debugcon_create(&vm->svc, log);
        if (d < 0)
            return errf(err, errlen, d, "KVMBOX_FW_DEBUG=%s: %s", log, strerror(-d));
    }
    struct fw_cfg_items it;
    fw_cfg_items_init(&it);
    int r = build_items(vm, &it);
    if (r < 0) {
        fw_cfg_items_free(&it);
        return errf(err, errlen, r, "cannot build the firmware configuration: %s", strerror(-r));
    }
    r = fw_cfg_create(&vm->svc, &it, &vm->fw_cfg);
    return r < 0 ? errf(err, errlen, r, "cannot create the fw_cfg device: %s", strerror(-r)) : 0;
}
