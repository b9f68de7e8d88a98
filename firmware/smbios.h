/* SMBIOS tables for firmware (DMTF DSP0134; fw_cfg files "etc/smbios/smbios-tables" and
 * "etc/smbios/smbios-anchor", as QEMU gives them): type 1 (system: the VM's UUID and name),
 * type 32 (boot status) and the end marker. The firmware adds its own type 0 (BIOS
 * information: its vendor and version) and places the tables. */
#ifndef KVMBOX_SMBIOS_H
#define KVMBOX_SMBIOS_H

#include <stddef.h>
#include <stdint.h>

#define SMBIOS_ANCHOR_LEN 31 /* SMBIOS 2.1 (32-bit) entry point */

struct smbios_info {
    const uint8_t *uuid; /* 16 bytes in RFC 4122 order */
    const char *name;    /* the VM's name: type 1's serial number */
    const char *version; /* kvmbox's version: type 1's version */
};

/* Writes the structure table into TABLES (CAP bytes) and the entry point into ANCHOR (its
 * table address left 0 for the firmware to fill). Strings are cut to 64 bytes. Returns the
 * table's length or -ENOSPC. */
int smbios_build(const struct smbios_info *info, uint8_t *tables, size_t cap,
                 uint8_t anchor[SMBIOS_ANCHOR_LEN]);

#endif
