/* Linux x86 boot protocol (Documentation/arch/x86/boot.rst): bzImage with a setup header. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "firmware/e820.h"
#include "vmm/boot.h"
#include "vmm/layout.h"
#include "common/util.h"

/* Offsets into boot_params / the setup header. */
#define BP_ACPI_RSDP        0x070
#define BP_EXT_RAMDISK_IMG  0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE     0x0c8
#define BP_E820_ENTRIES     0x1e8
#define BP_SETUP_SECTS      0x1f1
#define BP_VID_MODE         0x1fa
#define BP_BOOT_FLAG        0x1fe
#define BP_JUMP             0x200
#define BP_HEADER           0x202
#define BP_VERSION          0x206
#define BP_TYPE_OF_LOADER   0x210
#define BP_LOADFLAGS        0x211
#define BP_CODE32_START     0x214
#define BP_RAMDISK_IMAGE    0x218
#define BP_RAMDISK_SIZE     0x21c
#define BP_HEAP_END_PTR     0x224
#define BP_CMD_LINE_PTR     0x228
#define BP_INITRD_ADDR_MAX  0x22c
#define BP_XLOADFLAGS       0x236
#define BP_CMDLINE_SIZE     0x238
#define BP_INIT_SIZE        0x260
#define BP_E820_TABLE       0x2d0
#define BP_E820_MAX         128
#define BP_SIZE             4096

#define LOADED_HIGH   0x01
#define CAN_USE_HEAP  0x80
#define XLF_KERNEL_64 0x01

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16;
}
static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)v);
    wr16(p + 2, (uint16_t)(v >> 16));
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

int boot_is_bzimage(const struct boot_image *img)
{
    return img->size >= 0x264 && rd16(img->data + BP_BOOT_FLAG) == 0xaa55 &&
           memcmp(img->data + BP_HEADER, "HdrS", 4) == 0;
}

static int place_initrd(const struct boot_request *req, const struct boot_image *initrd, uint8_t *bp,
                        uint64_t kernel_end, char *err, size_t errlen)
{
    uint64_t max = (uint64_t)rd32(bp + BP_INITRD_ADDR_MAX) + 1;
    uint64_t addr = boot_place_high(req->gm, initrd->size, kernel_end, max);
    if (!addr)
        return errf(err, errlen, -E2BIG,
                    "initrd %s (%zu bytes) does not fit in guest RAM below %#llx after the "
                    "kernel; give the guest more memory",
                    req->initrd_path, initrd->size, (unsigned long long)max);
    memcpy(gm_ptr(req->gm, addr, initrd->size), initrd->data, initrd->size);
    wr32(bp + BP_RAMDISK_IMAGE, (uint32_t)addr);
    wr32(bp + BP_RAMDISK_SIZE, (uint32_t)initrd->size);
    wr32(bp + BP_EXT_RAMDISK_IMG, (uint32_t)(addr >> 32));
    wr32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)initrd->size >> 32));
    return 0;
}

static int fill_e820(const struct boot_request *req, uint8_t *bp, char *err, size_t errlen)
{
    if (req->ne820 > BP_E820_MAX)
        return errf(err, errlen, -E2BIG, "memory map has too many entries");
    for (int i = 0; i < req->ne820; i++)
        memcpy(bp + BP_E820_TABLE + 20 * i, &req->e820[i], 20);
    bp[BP_E820_ENTRIES] = (uint8_t)req->ne820;
    return 0;
}

int boot_load_bzimage(const struct boot_request *req, const struct boot_image *img,
                      const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen)
{
    const uint8_t *k = img->data;
    uint16_t version = rd16(k + BP_VERSION);
    if (version < 0x206)
        return errf(err, errlen, -ENOEXEC,
                    "%s: Linux boot protocol %u.%02u is too old (2.06 or later needed)", req->kernel_path,
                    version >> 8, version & 0xff);
    if (!(k[BP_LOADFLAGS] & LOADED_HIGH))
        return errf(err, errlen, -ENOEXEC, "%s: zImage kernels (loaded low) are not supported",
                    req->kernel_path);
    unsigned setup_sects = k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4;
    size_t setup_size = (size_t)(setup_sects + 1) * 512;
    if (setup_size >= img->size)
        return errf(err, errlen, -ENOEXEC, "%s: truncated bzImage", req->kernel_path);
    size_t pm_size = img->size - setup_size;
    uint64_t init_size = rd32(k + BP_INIT_SIZE);
    if (init_size < pm_size)
        init_size = pm_size;
    uint64_t kernel_end = LAYOUT_HIGH_KERNEL + init_size;
    uint8_t *pm = gm_ptr(req->gm, LAYOUT_HIGH_KERNEL, init_size);
    if (!pm || kernel_end > gm_low_end(req->gm))
        return errf(err, errlen, -E2BIG, "kernel %s needs %llu MiB from 1 MiB up; give the guest more memory",
                    req->kernel_path, (unsigned long long)(kernel_end >> 20) + 1);
    memcpy(pm, k + setup_size, pm_size);

    uint8_t *bp = gm_ptr(req->gm, LAYOUT_ZERO_PAGE, BP_SIZE);
    memset(bp, 0, BP_SIZE);
    /* The setup header runs from 0x1f1 to 0x202 + the byte at 0x201 (the jump's offset). */
    size_t hdr_end = BP_HEADER + k[BP_JUMP + 1];
    if (hdr_end > img->size || hdr_end > BP_E820_TABLE)
        hdr_end = BP_INIT_SIZE + 4;
    memcpy(bp + BP_SETUP_SECTS, k + BP_SETUP_SECTS, hdr_end - BP_SETUP_SECTS);

    size_t cl_len = strlen(req->cmdline);
    uint32_t cl_max = rd32(k + BP_CMDLINE_SIZE);
    if (cl_len > cl_max || cl_len >= LAYOUT_CMDLINE_MAX)
        return errf(err, errlen, -E2BIG, "command line is %zu bytes; this kernel takes at most %u", cl_len,
                    cl_max);
    int r = gm_write(req->gm, LAYOUT_CMDLINE, req->cmdline, cl_len + 1);
    if (r < 0)
        return errf(err, errlen, r, "no RAM for the command line");
    wr32(bp + BP_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
    bp[BP_TYPE_OF_LOADER] = 0xff;
    bp[BP_LOADFLAGS] |= CAN_USE_HEAP;
    wr16(bp + BP_HEAP_END_PTR, 0xfe00);
    wr16(bp + BP_VID_MODE, 0xffff);
    wr64(bp + BP_ACPI_RSDP, req->rsdp_gpa);
    if (initrd && (r = place_initrd(req, initrd, bp, kernel_end, err, errlen)) < 0)
        return r;
    if ((r = fill_e820(req, bp, err, errlen)) < 0)
        return r;

    bool lm = version >= 0x20c && (rd16(k + BP_XLOADFLAGS) & XLF_KERNEL_64);
    out->proto = lm ? BOOT_LINUX64 : BOOT_LINUX32;
    out->entry = lm ? LAYOUT_HIGH_KERNEL + 0x200 : LAYOUT_HIGH_KERNEL;
    out->arg = LAYOUT_ZERO_PAGE;
    out->magic = 0;
    return 0;
}
