/* Kernel loading: detects the format, places kernel, initrd and command line in guest RAM,
 * builds the boot structures (zero page, hvm_start_info or multiboot info) and says how the
 * boot vCPU must start. */
#ifndef KVMBOX_BOOT_H
#define KVMBOX_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/guest_mem.h"

enum boot_proto {
    BOOT_LINUX64,   /* Linux 64-bit boot protocol: long mode, RSI = boot_params */
    BOOT_LINUX32,   /* Linux 32-bit boot protocol: flat protected mode, ESI = boot_params */
    BOOT_PVH,       /* PVH: 32-bit protected mode, EBX = hvm_start_info */
    BOOT_MULTIBOOT, /* multiboot v1: 32-bit protected mode, EAX = magic, EBX = info */
};

struct boot_info {
    enum boot_proto proto;
    uint64_t entry; /* guest-physical entry point */
    uint64_t arg;   /* RSI/ESI/EBX value */
    uint32_t magic; /* EAX for multiboot */
};

struct e820_entry;

struct boot_request {
    const struct guest_mem *gm;
    const char *kernel_path;
    const char *initrd_path; /* NULL: none */
    const char *cmdline;     /* never NULL */
    uint64_t rsdp_gpa;
    const struct e820_entry *e820;
    int ne820;
};

/* Loads the kernel. Errors: -ENOENT/-EACCES (file), -ENOEXEC (not a kernel we can boot),
 * -E2BIG (kernel, initrd or command line does not fit), -EIO (truncated file); ERR says which. */
int boot_load(const struct boot_request *req, struct boot_info *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Format-specific loaders (boot_linux.c, boot_elf.c) over the whole file in memory. */
struct boot_image {
    const uint8_t *data;
    size_t size;
};
int boot_is_bzimage(const struct boot_image *img);
int boot_load_bzimage(const struct boot_request *req, const struct boot_image *img,
                      const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen);
/* Returns 1 when IMG is an ELF with a PVH note or a multiboot header that boot_load_elf or
 * boot_load_multiboot can start, 0 otherwise. */
int boot_load_pvh(const struct boot_request *req, const struct boot_image *img,
                  const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen);
int boot_load_multiboot(const struct boot_request *req, const struct boot_image *img,
                        const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen);
/* Places an initrd/module at the highest page-aligned address in [min, max) of RAM; returns
 * the address or 0 when it does not fit. */
uint64_t boot_place_high(const struct guest_mem *gm, uint64_t size, uint64_t min, uint64_t max);

#endif
