/* i8042 keyboard controller: no keyboard or mouse behind it, but enough of the command set
 * that guests probing it get sane answers, and the two ways PCs reset through it: command
 * 0xFE (pulse the reset line) and writing the output port with bit 0 clear. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"
#include "vmm/state.h"

#define STS_OBF         0x01 /* output buffer full */
#define STS_SYS         0x04 /* system flag: self-test passed */
#define STS_CMD         0x08 /* last write was a command */
#define CMD_READ_CCB    0x20
#define CMD_WRITE_CCB   0x60
#define CMD_SELF_TEST   0xaa
#define CMD_KBD_TEST    0xab
#define CMD_READ_OUT    0xd0
#define CMD_WRITE_OUT   0xd1
#define CMD_PULSE_RESET 0xfe

struct i8042 {
    const struct dev_services *svc;
    pthread_mutex_t lock;
    uint8_t status, ccb, out_port, pending_cmd, obuf;
};

static void put_output(struct i8042 *k, uint8_t v)
{
    k->obuf = v;
    k->status |= STS_OBF;
}

static void command(struct i8042 *k, uint8_t cmd)
{
    k->status |= STS_CMD;
    switch (cmd) {
    case CMD_READ_CCB: put_output(k, k->ccb); break;
    case CMD_SELF_TEST: put_output(k, 0x55); break;
    case CMD_KBD_TEST: put_output(k, 0x00); break;
    case CMD_READ_OUT: put_output(k, k->out_port); break;
    case CMD_WRITE_CCB:
    case CMD_WRITE_OUT: k->pending_cmd = cmd; break;
    case CMD_PULSE_RESET: k->svc->request_reset(k->svc->ctx); break;
    default:
        if ((cmd & 0xf0) == 0xf0 && !(cmd & 0x01))
            k->svc->request_reset(k->svc->ctx); /* pulse output bits including bit 0 (reset) */
        break;
    }
}

static void data_write(struct i8042 *k, uint8_t v)
{
    k->status &= (uint8_t)~STS_CMD;
    switch (k->pending_cmd) {
    case CMD_WRITE_CCB: k->ccb = v; break;
    case CMD_WRITE_OUT:
        k->out_port = v;
        if (!(v & 0x01))
            k->svc->request_reset(k->svc->ctx);
        break;
    default:
        put_output(k, 0xfe); /* no keyboard: resend */
        break;
    }
    k->pending_cmd = 0;
}

static void i8042_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct i8042 *k = dev;
    memset(data, 0, len);
    pthread_mutex_lock(&k->lock);
    if (off == 0) {
        *(uint8_t *)data = k->obuf;
        k->status &= (uint8_t)~STS_OBF;
    } else {
        *(uint8_t *)data = k->status;
    }
    pthread_mutex_unlock(&k->lock);
}

static void i8042_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct i8042 *k = dev;
    pthread_mutex_lock(&k->lock);
    if (off == 0)
        data_write(k, *(const uint8_t *)data);
    else
        command(k, *(const uint8_t *)data);
    pthread_mutex_unlock(&k->lock);
}

static const struct dev_ops i8042_data_ops = { .name = "i8042", .read = i8042_read, .write = i8042_write };

static void i8042_reset(void *dev)
{
    struct i8042 *k = dev;
    k->status = STS_SYS;
    k->ccb = 0x00;
    k->out_port = 0x01; /* reset line inactive */
    k->pending_cmd = 0;
    k->obuf = 0;
}

static void i8042_destroy(void *dev)
{
    struct i8042 *k = dev;
    pthread_mutex_destroy(&k->lock);
    free(k);
}

/* The data port sits at 0x60 and the command/status port at 0x64; 0x61 (NMI status and the
 * PIT's speaker gate) between them belongs to the in-kernel PIT. */
static void i8042_cmd_read(void *dev, uint64_t off, void *data, unsigned len)
{
    i8042_read(dev, 4, data, len);
}

static void i8042_cmd_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    i8042_write(dev, 4, data, len);
}

static const struct dev_ops i8042_cmd_ops = { .name = "i8042",
                                              .read = i8042_cmd_read,
                                              .write = i8042_cmd_write };

static int i8042_save(void *dev, struct st_writer *w);
static int i8042_load(void *dev, const struct st_section *s, char *err, size_t errlen);

int i8042_create(const struct dev_services *svc)
{
    struct i8042 *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->svc = svc;
    pthread_mutex_init(&k->lock, NULL);
    i8042_reset(k);
    int r = svc->add_device(svc->ctx, "i8042", k, i8042_reset, i8042_destroy);
    if (r < 0) {
        i8042_destroy(k);
        return r;
    }
    svc->on_save(svc->ctx, k, 1, i8042_save, i8042_load, NULL);
    r = dev_map_pio(svc, PORT_I8042_DATA, 1, &i8042_data_ops, k);
    return r < 0 ? r : dev_map_pio(svc, PORT_I8042_CMD, 1, &i8042_cmd_ops, k);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

static int i8042_save(void *dev, struct st_writer *w)
{
    struct i8042 *k = dev;
    pthread_mutex_lock(&k->lock);
    uint8_t regs[5] = { k->status, k->ccb, k->out_port, k->pending_cmd, k->obuf };
    pthread_mutex_unlock(&k->lock);
    st_put(w, "regs", regs, sizeof(regs));
    return 0;
}

static int i8042_load(void *dev, const struct st_section *s, char *err, size_t errlen)
{
    struct i8042 *k = dev;
    uint8_t regs[5];
    int r = st_need(s, "regs", regs, sizeof(regs), err, errlen);
    if (r < 0)
        return r;
    pthread_mutex_lock(&k->lock);
    k->status = regs[0], k->ccb = regs[1], k->out_port = regs[2], k->pending_cmd = regs[3];
    k->obuf = regs[4];
    pthread_mutex_unlock(&k->lock);
    return 0;
}
