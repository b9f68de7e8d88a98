/* Guest RAM: the one place where guest-physical addresses become host pointers. */
#ifndef KVMBOX_GUEST_MEM_H
#define KVMBOX_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_MAX_REGIONS 4

struct gm_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;
};

struct guest_mem {
    uint8_t *base;      /* one mapping backs all regions */
    uint64_t page_size; /* host page size of the mapping: 4 KiB, or 2 MiB for hugetlbfs */
    uint64_t map_size;  /* bytes mapped (RAM rounded up to the page size) */
    const char *huge;   /* "hugetlbfs", "transparent" or "off" */
    uint64_t ram_size;  /* bytes of RAM in all regions together */
    unsigned nregions;
    struct gm_region regions[GM_MAX_REGIONS];
};

/* Maps RAM_SIZE bytes lazily (MAP_NORESERVE, transparent huge pages advised) and splits them
 * around the PCI hole. With HUGEPAGES, hugetlbfs pages are taken (reserved at once); when
 * the host has not enough of them, transparent huge pages are used if the host allows them
 * (NOTE says so), else it fails with -ENOMEM and ERR saying why. */
int gm_init(struct guest_mem *gm, uint64_t ram_size, bool hugepages, char *note, size_t notelen, char *err,
            size_t errlen) __attribute__((warn_unused_result));
/* Builds the regions over an existing mapping (unit tests, reset). */
void gm_layout(struct guest_mem *gm, uint8_t *base, uint64_t ram_size);
void gm_destroy(struct guest_mem *gm);
/* Returns a host pointer to [gpa, gpa+len) when the whole range lies inside one RAM
 * region, else NULL. len 0 is refused (NULL) so a caller cannot skip the check by accident. */
void *gm_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* Copies into / out of guest RAM; -EFAULT when the range is not wholly RAM. */
int gm_write(const struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len);
int gm_read(const struct guest_mem *gm, void *dst, uint64_t gpa, uint64_t len);
/* Gives [gpa, gpa+len) back to the host (whole host pages inside it; with huge pages, whole
 * huge pages only); it reads as zeroes when touched again. Returns the bytes released, or
 * -EFAULT when the range is not RAM. */
int64_t gm_discard(struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* Gives all RAM back to the host; it reads as zeroes afterwards. */
void gm_discard_all(struct guest_mem *gm);
/* Highest RAM address below 4 GiB (exclusive). */
uint64_t gm_low_end(const struct guest_mem *gm);

#endif
