/* QEMU's debugcon at port 0x402 (isa-debugcon): SeaBIOS writes its debug log there when a
 * read of the port returns 0xe9. Only created when KVMBOX_FW_DEBUG names a file to append
 * the log to (docs/firmware.md): reads otherwise return all-ones and SeaBIOS stays quiet,
 * which saves one exit per character. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/devices.h"
#include "devices/services.h"

#define PORT_DEBUGCON 0x402

struct debugcon {
    int fd;
};

static void debugcon_read(void *dev, uint64_t off, void *data, unsigned len)
{
    memset(data, 0, len);
    *(uint8_t *)data = 0xe9;
}

static void debugcon_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct debugcon *d = dev;
    if (write(d->fd, data, 1) < 0) {
        /* a debugging aid: a full disk loses log text, nothing else */
    }
}

static const struct dev_ops debugcon_ops = {
    .name = "debugcon",
    .read = debugcon_read,
    .write = debugcon_write,
};

static void debugcon_destroy(void *dev)
{
    struct debugcon *d = dev;
    close(d->fd);
    free(d);
}

int debugcon_create(const struct dev_services *svc, const char *path)
{
    struct debugcon *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (d->fd < 0) {
        int e = -errno;
        free(d);
        return e;
    }
    int r = svc->add_device(svc->ctx, "debugcon", d, NULL, debugcon_destroy);
    if (r < 0) {
        debugcon_destroy(d);
        return r;
    }
    return dev_map_pio(svc, PORT_DEBUGCON, 1, &debugcon_ops, d);
}
