/* Booting through firmware: the BIOS (or UEFI) image is mapped at the top of 4 GiB as
 * read-only memory, and a copy of it ends at 1 MiB (the legacy BIOS area; docs/firmware.md). The boot vCPU starts at the reset vector. */
#ifndef KVMBOX_BOOT_FIRMWARE_H
#define KVMBOX_BOOT_FIRMWARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/guest_mem.h"

#define FW_DEFAULT_BIOS "/usr/share/seabios/bios-256k.bin"
#define FW_MAX_SIZE     (16u << 20)  /* the flash window below 4 GiB that kvmbox leaves free */
#define FW_ISA_MAX      (128u << 10) /* what the legacy BIOS area shows of a large image */
#define FW_SHADOW_MAX   (256u << 10) /* images up to this size are copied whole below 1 MiB */

struct fw_image {
    uint8_t *pristine; /* the file's bytes */
    uint8_t *host;     /* what the guest's slot maps (copied from pristine at boot) */
    size_t size;
};

/* Reads the firmware file at PATH. Refuses a missing or unreadable file, a size that is not a
 * multiple of 64 KiB or is above FW_MAX_SIZE, and an image without a reset vector (its last
 * 16 bytes all the same: zeroes or erased flash). Errors are negative errno with ERR saying
 * what is wrong (all are configuration errors but -ENOMEM). */
int fw_image_load(const char *path, struct fw_image *fw, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void fw_image_free(struct fw_image *fw);
/* Guest-physical address of the image: it ends at 4 GiB. */
uint64_t fw_image_base(const struct fw_image *fw);
/* Puts a fresh copy in the mapped image, and the whole image (up to FW_SHADOW_MAX, else its
 * last FW_ISA_MAX bytes) just below 1 MiB in RAM. Called on every (re)boot. Returns 0 or -EFAULT. */
int fw_image_install(struct fw_image *fw, const struct guest_mem *gm) __attribute__((warn_unused_result));
/* Saved state (docs/savestate.md): section "firmware" with PATH, the image's size and CRC32
 * (its fingerprint), and the mapped image's bytes when the guest changed them (possible only
 * where KVM has no read-only memory). */
struct st_writer;
struct st_section;
void fw_image_save(const struct fw_image *fw, const char *path, struct st_writer *w);
/* On restore, once the file at PATH is loaded: refuses an image that differs from the saved
 * fingerprint (-ESTALE, ERR naming PATH) and fills the mapped image as it was saved. 0 or a
 * negative errno. */
int fw_image_load_state(struct fw_image *fw, const char *path, const struct st_section *s, char *err,
                        size_t errlen) __attribute__((warn_unused_result));
/* Pure check of an image's bytes, for fw_image_load and unit tests: 0, or -ENOEXEC. */
int fw_image_check(const uint8_t *data, size_t size);

#endif
