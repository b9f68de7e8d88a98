/* QEMU's isa-debug-exit: a write of V ends the VM with exit status (V << 1) | 1, so a test
 * guest can report its verdict as the process status. */
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"

static void debug_exit_read(void *dev, uint64_t off, void *data, unsigned len)
{
    memset(data, 0xff, len);
}

static void debug_exit_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    uint32_t v = 0;
    memcpy(&v, data, len > 4 ? 4 : len);
    dev_request_stop(dev, KVMBOX_STOP_DEBUG_EXIT, v, "guest wrote %#x to the debug-exit port", v);
}

static const struct dev_ops debug_exit_ops = {
    .name = "debug-exit",
    .read = debug_exit_read,
    .write = debug_exit_write,
};

int debug_exit_create(const struct dev_services *svc)
{
    return dev_map_pio(svc, PORT_DEBUG_EXIT, 4, &debug_exit_ops, (void *)svc);
}
