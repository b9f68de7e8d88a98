#include "vmm/bus.h"

#include <errno.h>
#include <string.h>

void bus_init(struct bus *bus, const char *name)
{
    memset(bus, 0, sizeof(*bus));
    bus->name = name;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct dev_ops *ops, void *dev)
{
    uint64_t end;
    if (len == 0 || !ops || __builtin_add_overflow(base, len - 1, &end))
        return -EINVAL;
    if (bus->n == BUS_MAX_RANGES)
        return -ENOSPC;
    unsigned pos = 0;
    while (pos < bus->n && bus->ranges[pos].base < base)
        pos++;
    if (pos > 0) {
        const struct bus_range *prev = &bus->ranges[pos - 1];
        if (prev->base + (prev->len - 1) >= base)
            return -EEXIST;
    }
    if (pos < bus->n && bus->ranges[pos].base <= end)
        return -EEXIST;
    memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->n - pos) * sizeof(bus->ranges[0]));
    bus->ranges[pos] = (struct bus_range){ base, len, ops, dev };
    bus->n++;
    return 0;
}

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned len)
{
    unsigned lo = 0, hi = bus->n;
    uint64_t last;
    if (len == 0 || __builtin_add_overflow(addr, (uint64_t)len - 1, &last))
        return NULL;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        const struct bus_range *r = &bus->ranges[mid];
        if (addr < r->base)
            hi = mid;
        else if (addr - r->base >= r->len)
            lo = mid + 1;
        else
            return last - r->base < r->len ? r : NULL;
    }
    return NULL;
}

bool bus_access(struct bus *bus, uint64_t addr, void *data, unsigned len, bool is_write)
{
    const struct bus_range *r = bus_find(bus, addr, len);
    if (!r || (is_write ? !r->ops->write : !r->ops->read)) {
        if (!is_write)
            memset(data, 0xff, len);
        __atomic_add_fetch(&bus->unclaimed, 1, __ATOMIC_RELAXED);
        return false;
    }
    if (is_write)
        r->ops->write(r->dev, addr - r->base, data, len);
    else
        r->ops->read(r->dev, addr - r->base, data, len);
    return true;
}
