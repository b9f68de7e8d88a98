/* Firmware images: load, check, and place them where a PC's flash and legacy BIOS area are. */
#include "vmm/boot_firmware.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "vmm/layout.h"
#include "vmm/state.h"
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

/* ---- saved state (docs/savestate.md) --------------------------------------------------------- */

#define FW_SECTION_VERSION 1

static uint32_t image_crc(const uint8_t *p, size_t len)
{
    uLong c = crc32(0, Z_NULL, 0);
    for (size_t off = 0; off < len;) { /* uInt is 32 bits: in pieces */
        size_t n = len - off < (1u << 30) ? len - off : (1u << 30);
        c = crc32(c, p + off, (uInt)n);
        off += n;
    }
    return (uint32_t)c;
}

void fw_image_save(const struct fw_image *fw, const char *path, struct st_writer *w)
{
    st_begin(w, "firmware", 0, FW_SECTION_VERSION);
    st_put_str(w, "path", path);
    st_put_u64(w, "size", fw->size);
    st_put_u32(w, "crc32", image_crc(fw->pristine, fw->size));
    /* Where KVM cannot make the slot read-only, the guest may have written it. */
    if (memcmp(fw->host, fw->pristine, fw->size))
        st_put(w, "rom", fw->host, (uint32_t)fw->size);
    st_end(w);
}

int fw_image_load_state(struct fw_image *fw, const char *path, const struct st_section *s, char *err,
                        size_t errlen)
{
    uint64_t size, crc;
    if (s->version != FW_SECTION_VERSION)
        return errf(err, errlen, -EPROTO, "saved state: firmware section version %u, this kvmbox reads %u",
                    s->version, FW_SECTION_VERSION);
    if (st_get_uint(s, "size", &size) < 0 || st_get_uint(s, "crc32", &crc) < 0)
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (firmware section)");
    if (size != fw->size || crc != image_crc(fw->pristine, fw->size))
        return errf(err, errlen, -ESTALE,
                    "firmware %s changed since the state was saved (its size or "
                    "contents differ); the saved guest runs code from the old one",
                    path);
    memcpy(fw->host, fw->pristine, fw->size);
    uint32_t len;
    const void *rom = st_field(s, "rom", &len);
    if (rom && len != fw->size)
        return errf(err, errlen, -EBADMSG, "saved state: the firmware's memory is %u bytes, not %zu", len,
                    fw->size);
    if (rom)
        memcpy(fw->host, rom, fw->size);
    return 0;
}
