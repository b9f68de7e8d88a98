#include "vmm/guest_mem.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "vmm/layout.h"

void gm_layout(struct guest_mem *gm, uint8_t *base, uint64_t ram_size)
{
    memset(gm, 0, sizeof(*gm));
    gm->base = base;
    gm->page_size = 4096;
    gm->ram_size = ram_size;
    uint64_t low = ram_size < LAYOUT_MMIO_START ? ram_size : LAYOUT_MMIO_START;
    gm->regions[gm->nregions++] = (struct gm_region){ 0, low, base };
    if (ram_size > low)
        gm->regions[gm->nregions++] =
            (struct gm_region){ LAYOUT_4G, ram_size - low, base + low };
}

int gm_init(struct guest_mem *gm, uint64_t ram_size)
{
    if (ram_size == 0 || ram_size > SIZE_MAX)
        return -EINVAL;
    void *p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    /* Transparent huge pages where the host allows them: fewer EPT/shadow faults. */
    madvise(p, ram_size, MADV_HUGEPAGE);
    gm_layout(gm, p, ram_size);
    return 0;
}

void gm_destroy(struct guest_mem *gm)
{
    if (gm->base)
        munmap(gm->base, gm->ram_size);
    memset(gm, 0, sizeof(*gm));
}

void *gm_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
    uint64_t end;
    if (len == 0 || __builtin_add_overflow(gpa, len, &end))
        return NULL;
    for (unsigned i = 0; i < gm->nregions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (gpa >= r->gpa && end <= r->gpa + r->size)
            return r->host + (gpa - r->gpa);
    }
    return NULL;
}

int gm_write(const struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len)
{
    void *p = gm_ptr(gm, gpa, len);
    if (!p)
        return -EFAULT;
    memcpy(p, src, len);
    return 0;
}

int gm_read(const struct guest_mem *gm, void *dst, uint64_t gpa, uint64_t len)
{
    const void *p = gm_ptr(gm, gpa, len);
    if (!p)
        return -EFAULT;
    memcpy(dst, p, len);
    return 0;
}

int64_t gm_discard(struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
    uint8_t *p = gm_ptr(gm, gpa, len);
    if (!p)
        return -EFAULT;
    uint64_t ps = gm->page_size ? gm->page_size : 4096;
    uintptr_t a = ((uintptr_t)p + ps - 1) & ~(uintptr_t)(ps - 1);
    uintptr_t e = ((uintptr_t)p + len) & ~(uintptr_t)(ps - 1);
    if (e <= a)
        return 0;
    if (madvise((void *)a, e - a, MADV_DONTNEED) < 0)
        return -errno;
    return (int64_t)(e - a);
}

void gm_discard_all(struct guest_mem *gm)
{
    if (gm->base)
        madvise(gm->base, gm->ram_size, MADV_DONTNEED);
}

uint64_t gm_low_end(const struct guest_mem *gm)
{
    return gm->nregions ? gm->regions[0].size : 0;
}
