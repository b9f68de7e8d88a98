/* What firmware needs from the machine, put into fw_cfg (docs/firmware.md): the memory map,
 * CPU count, ACPI tables through the table loader, SMBIOS, boot order, serial console. */
#ifndef KVMBOX_FW_SETUP_H
#define KVMBOX_FW_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/fw_cfg.h"

struct vm;

/* Builds the fw_cfg contents for VM and creates the fw_cfg device. Returns 0 or a negative
 * errno with ERR saying why. */
int fw_setup(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* On a guest reboot: a one-time boot order (--boot once=) gives way to the normal one. */
int fw_setup_reboot(struct vm *vm) __attribute__((warn_unused_result));

/* SeaBIOS's "bootorder" file for ORDER (classes, END-terminated; NULL or empty: disk, then
 * cdrom): the devices with a bootindex first, then by class, in the order given; then HALT.
 * Returns its length with the NUL, or -ENOSPC. */
#define FW_BOOTORDER_MAX FW_CFG_BOOTORDER_MAX
int fw_bootorder(const struct vm *vm, const uint8_t *order, char *out, size_t len);

/* Watches COM1 output for the firmware's message that nothing is bootable. */
#define FW_NO_BOOT_TEXT "No bootable device"
struct fw_watch {
    size_t pos;
};
/* Feeds LEN bytes; returns true when the text was seen in them (across calls too). */
bool fw_watch_feed(struct fw_watch *w, const uint8_t *buf, size_t len);

#endif
