/* Port 0x80: POST codes, and the port Linux and BIOSes write to for a short I/O delay.
 * Claiming it keeps those writes off the unclaimed-access path. */
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"

static void post_read(void *dev, uint64_t off, void *data, unsigned len)
{
    memset(data, 0xff, len);
}

static void post_write(void *dev, uint64_t off, const void *data, unsigned len)
{
}

static const struct dev_ops post_ops = { .name = "post", .read = post_read, .write = post_write };

int post_create(const struct dev_services *svc)
{
    return dev_map_pio(svc, PORT_POST, 1, &post_ops, NULL);
}
