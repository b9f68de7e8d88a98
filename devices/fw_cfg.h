/* QEMU's fw_cfg device (docs/specs/fw_cfg.rst): selector 0x510, data 0x511, DMA address
 * 0x514 (high) / 0x518 (low, the write that starts a transfer). It serves the items the VM
 * built; firmware (SeaBIOS, OVMF) reads the memory map, ACPI and SMBIOS tables, boot order
 * and CPU count through it. */
#ifndef KVMBOX_FW_CFG_H
#define KVMBOX_FW_CFG_H

#include <stdint.h>

#include "firmware/fw_cfg_items.h"

#define PORT_FW_CFG     0x510
#define PORT_FW_CFG_DMA 0x514
/* The longest "bootorder" file the VM builds (vmm/fw_setup.h) and a saved state may carry. */
#define FW_CFG_BOOTORDER_MAX 2048

struct dev_services;
struct fw_cfg;

/* Registers the device on the VM's port bus and takes ITEMS over (freed with the device).
 * Returns 0 or a negative errno. */
int fw_cfg_create(const struct dev_services *svc, struct fw_cfg_items *items, struct fw_cfg **out)
    __attribute__((warn_unused_result));

/* Replaces the contents of file NAME (a reboot's new boot order). 0, -ENOENT or -ENOMEM. */
int fw_cfg_update_file(struct fw_cfg *f, const char *name, const void *data, uint32_t len);

/* One DMA request (FW_CFG_DMA_CTL_*), as the pure part of the device: runs the access
 * structure at GPA against ITEMS, the selection *KEY and *OFFSET. Returns the control word
 * to write back (0, or FW_CFG_DMA_CTL_ERROR). Exposed for unit tests. */
struct guest_mem;
uint32_t fw_cfg_dma_run(const struct guest_mem *gm, const struct fw_cfg_items *items, uint16_t *key,
                        uint32_t *offset, uint64_t gpa);

#define FW_CFG_DMA_CTL_ERROR  0x01u
#define FW_CFG_DMA_CTL_READ   0x02u
#define FW_CFG_DMA_CTL_SKIP   0x04u
#define FW_CFG_DMA_CTL_SELECT 0x08u
#define FW_CFG_DMA_CTL_WRITE  0x10u

#endif
