/* The fw_cfg items of a kvmbox VM booting through firmware. */
#include "vmm/fw_setup.h"

#include <errno.h>
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
#include "vmm/util.h"
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

#define ACPI_MAX (64u << 10)
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

static int build_items(struct vm *vm, struct fw_cfg_items *it)
{
    int r;
    if ((r = fw_cfg_set(it, FW_CFG_SIGNATURE, "QEMU", 4)) < 0 ||
        (r = fw_cfg_set_u32(it, FW_CFG_ID, FW_CFG_ID_TRADITIONAL | FW_CFG_ID_DMA)) < 0 ||
        (r = fw_cfg_set(it, FW_CFG_UUID, vm->cfg.uuid, 16)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_NB_CPUS, (uint16_t)vm->ncpus)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_MAX_CPUS, (uint16_t)vm->ncpus)) < 0 ||
        (r = fw_cfg_set_u16(it, FW_CFG_NOGRAPHIC, 1)) < 0)
        return r;
    uint64_t ram = vm->mem.ram_size;
    if ((r = fw_cfg_set(it, FW_CFG_RAM_SIZE, &ram, sizeof(ram))) < 0)
        return r;
    if ((r = add_e820(vm, it)) < 0 ||
        (r = add_u16_file(it, "etc/boot-cpus", (uint16_t)vm->ncpus)) < 0 ||
        /* SeaBIOS's own serial console on COM1: menu and boot loader text without a display */
        (r = add_u16_file(it, "etc/sercon-port", PORT_COM1)) < 0 ||
        (r = add_u32_file(it, "etc/boot-fail-wait", 1000)) < 0 ||
        (r = add_acpi(vm, it)) < 0 || (r = add_smbios(vm, it)) < 0)
        return r;
    return 0;
}

int fw_setup(struct vm *vm, char *err, size_t errlen)
{
    const char *log = getenv("KVMBOX_FW_DEBUG");
    if (log && *log) {
        int d = debugcon_create(vm, log);
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
    r = fw_cfg_create(vm, &it, &vm->fw_cfg);
    return r < 0 ? errf(err, errlen, r, "cannot create the fw_cfg device: %s", strerror(-r)) : 0;
}
