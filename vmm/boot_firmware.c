/* Firmware images: load, check, and place them where a PC's flash and legacy BIOS area are. */
#include "vmm/boot_firmware.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/layout.h"
#include "common/util.h"

int fw_image_check(const uint8_t *data, size_t size)
{
    if (size < 16 || size % (64u << 10) || size > FW_MAX_SIZE)
        return -ENOEXEC;
    /* The reset vector is the image's last 16 bytes (0xFFFFFFF0): a jump. Erased flash
     * (0xff) or a zero-filled file has none. */
    const uint8_t *v = data + size - 16;
    for (int i = 1; i < 16; i++)
        if (v[i] != v[0])
            return 0;
    return -ENOEXEC;
}

int fw_image_load(const char *path, struct fw_image *fw, char *err, size_t errlen)
{
    memset(fw, 0, sizeof(*fw));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, -errno, "cannot open the firmware %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errf(err, errlen, -EINVAL, "firmware %s is not a regular file", path);
    }
    if (st.st_size < (64 << 10) || st.st_size % (64 << 10) || st.st_size > FW_MAX_SIZE) {
        close(fd);
        return errf(err, errlen, -ENOEXEC,
                    "firmware %s is not a BIOS image: its size (%lld bytes) "
                    "is not a multiple of 64 KiB up to 16 MiB",
                    path, (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    fw->pristine = malloc(size);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!fw->pristine || map == MAP_FAILED) {
        close(fd);
        free(fw->pristine);
        fw->pristine = NULL;
        if (map != MAP_FAILED)
            munmap(map, size);
        return errf(err, errlen, -ENOMEM, "out of memory");
    }
    fw->host = map, fw->size = size;
    int r = read_full_at(fd, fw->pristine, size, 0);
    close(fd);
    if (r < 0) {
        fw_image_free(fw);
        return errf(err, errlen, -EIO, "cannot read the firmware %s", path);
    }
    if (fw_image_check(fw->pristine, size) < 0) {
        fw_image_free(fw);
        return errf(err, errlen, -ENOEXEC,
                    "firmware %s is not a BIOS image: it has no reset "
                    "vector (its last 16 bytes are all the same)",
                    path);
    }
    return 0;
}

void fw_image_free(struct fw_image *fw)
{
    free(fw->pristine);
    if (fw->host)
        munmap(fw->host, fw->size);
    memset(fw, 0, sizeof(*fw));
}

uint64_t fw_image_base(const struct fw_image *fw)
{
    return LAYOUT_4G - fw->size;
}

int fw_image_install(struct fw_image *fw, const struct guest_mem *gm)
{
    memcpy(fw->host, fw->pristine, fw->size);
    /* A legacy BIOS of up to 256 KiB (SeaBIOS's bios-256k.bin) runs from a copy below 1 MiB
     * that reaches down to 0xC0000: on a PC chipset SeaBIOS makes that copy itself through the
     * PAM registers. kvmbox's RAM there is always writable (no PAM), so kvmbox makes the copy,
     * the same bytes SeaBIOS would have copied. Larger images (UEFI) show their last 128 KiB. */
    size_t isa = fw->size <= FW_SHADOW_MAX ? fw->size : FW_ISA_MAX;
    return gm_write(gm, LAYOUT_BIOS_END - isa, fw->pristine + fw->size - isa, isa);
}
