/* PIO and MMIO range tables: a vCPU exit is dispatched to the one device whose range holds
 * the whole access; the device sees an offset into its range. */
#ifndef KVMBOX_BUS_H
#define KVMBOX_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct dev_ops {
    const char *name;
    /* DATA holds LEN (1, 2, 4 or 8) bytes, little-endian. Reads must fill all of it. */
    void (*read)(void *dev, uint64_t offset, void *data, unsigned len);
    void (*write)(void *dev, uint64_t offset, const void *data, unsigned len);
};

struct bus_range {
    uint64_t base, len;
    const struct dev_ops *ops;
    void *dev;
};

#define BUS_MAX_RANGES 64

struct bus {
    const char *name;
    unsigned n;
    struct bus_range ranges[BUS_MAX_RANGES]; /* sorted by base */
    uint64_t unclaimed;                      /* accesses no device took (stats) */
};

void bus_init(struct bus *bus, const char *name);
/* Registers [base, base+len). Refuses len 0 and overflow (-EINVAL), overlap (-EEXIST) and a
 * full table (-ENOSPC). Registration happens before vCPUs run; lookups take no lock. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct dev_ops *ops, void *dev)
    __attribute__((warn_unused_result));
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned len);
/* Dispatches one access. Returns true when a device took it; an unclaimed read returns
 * all-ones, an unclaimed write is dropped. */
bool bus_access(struct bus *bus, uint64_t addr, void *data, unsigned len, bool is_write);

#endif
