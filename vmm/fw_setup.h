/* What firmware needs from the machine, put into fw_cfg (docs/firmware.md): the memory map,
 * CPU count, ACPI tables through the table loader, SMBIOS, boot order, serial console. */
#ifndef KVMBOX_FW_SETUP_H
#define KVMBOX_FW_SETUP_H

#include <stddef.h>

struct vm;

/* Builds the fw_cfg contents for VM and creates the fw_cfg device. Returns 0 or a negative
 * errno with ERR saying why. */
int fw_setup(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
