#include "vmm/guest_mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "vmm/layout.h"
#include "common/util.h"

void gm_layout(struct guest_mem *gm, uint8_t *base, uint64_t ram_size)
{
    memset(gm, 0, sizeof(*gm));
    gm->base = base;
    gm->page_size = 4096;
    gm->ram_size = ram_size;
    uint64_t low = ram_size < LAYOUT_MMIO_START ? ram_size : LAYOUT_MMIO_START;
    gm->regions[gm->nregions++] = (struct gm_region){ 0, low, base };
    if (ram_size > low)
        gm->regions[gm->nregions++] = (struct gm_region){ LAYOUT_4G, ram_size - low, base + low };
}

#define HUGE_2M (2ULL << 20)

/* The host's transparent huge page mode: "always", "madvise" or "never". */
static void thp_mode(char *buf, size_t len)
{
    snprintf(buf, len, "never");
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return;
    char line[128];
    if (fgets(line, sizeof(line), f)) {
        char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
        if (a && b)
            snprintf(buf, len, "%.*s", (int)(b - a - 1), a + 1);
    }
    fclose(f);
}

static long free_hugepages(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    long n = 0;
    char line[128];
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "HugePages_Free: %ld", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

int gm_init(struct guest_mem *gm, uint64_t ram_size, bool hugepages, char *note, size_t notelen, char *err,
            size_t errlen)
{
    if (ram_size == 0 || ram_size > SIZE_MAX)
        return -EINVAL;
    if (note && notelen)
        note[0] = '\0';
    char thp[16];
    thp_mode(thp, sizeof(thp));
    if (hugepages) {
        /* No MAP_NORESERVE: the pages are reserved now, so a shortage fails here rather
         * than with SIGBUS when the guest touches its memory. */
        uint64_t size = (ram_size + HUGE_2M - 1) & ~(HUGE_2M - 1);
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
        if (p != MAP_FAILED) {
            gm_layout(gm, p, ram_size);
            gm->page_size = HUGE_2M, gm->map_size = size, gm->huge = "hugetlbfs";
            return 0;
        }
        long have = free_hugepages(), need = (long)(size / HUGE_2M);
        if (!strcmp(thp, "never"))
            return errf(err, errlen, -ENOMEM,
                        "hugepages=on: the host has %ld free 2 MiB huge pages "
                        "(the guest needs %ld: sysctl vm.nr_hugepages) and transparent huge pages "
                        "are disabled",
                        have, need);
        if (note)
            snprintf(note, notelen,
                     "hugepages=on: %ld free 2 MiB hugetlbfs pages, %ld needed; "
                     "using transparent huge pages instead",
                     have, need);
    }
    void *p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                   0);
    if (p == MAP_FAILED)
        return -errno;
    /* Transparent huge pages where the host allows them: fewer EPT/shadow faults. */
    bool thp_ok = strcmp(thp, "never") && madvise(p, ram_size, MADV_HUGEPAGE) == 0;
    gm_layout(gm, p, ram_size);
    gm->map_size = ram_size;
    gm->huge = thp_ok ? "transparent" : "off";
    return 0;
}

void gm_destroy(struct guest_mem *gm)
{
    if (gm->base)
        munmap(gm->base, gm->map_size ? gm->map_size : gm->ram_size);
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
        madvise(gm->base, gm->map_size ? gm->map_size : gm->ram_size, MADV_DONTNEED);
}

uint64_t gm_low_end(const struct guest_mem *gm)
{
    return gm->nregions ? gm->regions[0].size : 0;
}
