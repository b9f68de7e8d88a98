#include "vmm/boot.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

static int map_file(const char *path, const char *what, struct boot_image *img, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, -errno, "cannot open %s %s: %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errf(err, errlen, -EINVAL, "%s %s is not a regular file", what, path);
    }
    img->size = (size_t)st.st_size;
    img->data = NULL;
    if (img->size == 0) {
        close(fd);
        return errf(err, errlen, -ENOEXEC, "%s %s is empty", what, path);
    }
    void *p = mmap(NULL, img->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return errf(err, errlen, -e, "cannot read %s %s: %s", what, path, strerror(e));
    img->data = p;
    return 0;
}

static void unmap_file(struct boot_image *img)
{
    if (img->data)
        munmap((void *)img->data, img->size);
    img->data = NULL;
}

uint64_t boot_place_high(const struct guest_mem *gm, uint64_t size, uint64_t min, uint64_t max)
{
    uint64_t low_end = gm_low_end(gm);
    if (max > low_end)
        max = low_end;
    if (size == 0 || size > max)
        return 0;
    uint64_t addr = (max - size) & ~0xfffULL;
    if (addr < min || !gm_ptr(gm, addr, size))
        return 0;
    return addr;
}

static int is_elf(const struct boot_image *img)
{
    return img->size >= 4 && memcmp(img->data,
                                    "\x7f"
                                    "ELF",
                                    4) == 0;
}

int boot_load(const struct boot_request *req, struct boot_info *out, char *err, size_t errlen)
{
    struct boot_image kernel = { 0 }, initrd = { 0 };
    int r = map_file(req->kernel_path, "kernel", &kernel, err, errlen);
    if (r < 0)
        return r;
    if (req->initrd_path) {
        r = map_file(req->initrd_path, "initrd", &initrd, err, errlen);
        if (r < 0)
            goto out;
    }
    if (boot_is_bzimage(&kernel)) {
        r = boot_load_bzimage(req, &kernel, req->initrd_path ? &initrd : NULL, out, err, errlen);
        goto out;
    }
    if (is_elf(&kernel)) {
        r = boot_load_pvh(req, &kernel, req->initrd_path ? &initrd : NULL, out, err, errlen);
        if (r != -ENOENT)
            goto out;
    }
    r = boot_load_multiboot(req, &kernel, req->initrd_path ? &initrd : NULL, out, err, errlen);
    if (r == -ENOENT)
        r = errf(err, errlen, -ENOEXEC,
                 "%s is not a kernel kvmbox can boot (expected a Linux bzImage, an ELF kernel "
                 "with a PVH note, or a multiboot kernel)",
                 req->kernel_path);
out:
    unmap_file(&initrd);
    unmap_file(&kernel);
    return r;
}
