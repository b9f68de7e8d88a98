/* QEMU's ACPI table loader ("etc/table-loader", QEMU hw/acpi/bios-linker-loader.c): a list of
 * 128-byte commands that tell firmware to allocate fw_cfg files in guest memory, patch
 * pointers between them and fix checksums. kvmbox uses it so that a guest booting through
 * firmware sees the same ACPI tables as one booted directly, wherever the firmware puts them. */
#ifndef KVMBOX_TABLE_LOADER_H
#define KVMBOX_TABLE_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "firmware/acpi.h"

#define TL_CMD_SIZE     128
#define TL_ALLOCATE     1
#define TL_ADD_POINTER  2
#define TL_ADD_CHECKSUM 3
#define TL_ZONE_HIGH    1
#define TL_ZONE_FSEG    2
#define TL_FILE_MAX     56

#define TL_RSDP_FILE   "etc/acpi/rsdp"
#define TL_TABLES_FILE "etc/acpi/tables"

/* From tables BLOB built at guest address 0 (so every pointer is an offset into it) and FIX,
 * writes the loader commands into CMDS (room for MAXCMDS commands). The RSDP file is the
 * blob's first FIX->rsdp_len bytes; the tables file is the whole blob with those bytes
 * zeroed, so offsets stay the same. Returns the number of bytes of commands, -ENOSPC, or
 * -EINVAL for a fixup that does not lie inside BLOBLEN. */
int table_loader_build(const struct acpi_fixups *fix, size_t bloblen, uint8_t *cmds, unsigned maxcmds);

#endif
