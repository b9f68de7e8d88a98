/* QEMU's pvpanic (ISA variant): the guest reads the events it may signal and writes
 * PANICKED when it panics; kvmbox then ends with status 6. */
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"

#define PVPANIC_PANICKED     0x1
#define PVPANIC_CRASH_LOADED 0x2

static void pvpanic_read(void *dev, uint64_t off, void *data, unsigned len)
{
    memset(data, 0, len);
    *(uint8_t *)data = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
}

static void pvpanic_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    uint8_t v = *(const uint8_t *)data;
    if (v & PVPANIC_PANICKED)
        dev_request_stop(dev, KVMBOX_STOP_PANIC, v, "guest panicked (pvpanic)");
    /* CRASH_LOADED: the guest is about to run its crash kernel; let it. */
}

static const struct dev_ops pvpanic_ops = {
    .name = "pvpanic",
    .read = pvpanic_read,
    .write = pvpanic_write,
};

int pvpanic_create(const struct dev_services *svc)
{
    return dev_map_pio(svc, PORT_PVPANIC, 1, &pvpanic_ops, (void *)svc);
}
