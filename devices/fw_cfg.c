/* fw_cfg: the traditional interface (a 16-bit selector write, then byte reads of the data
 * port) and the DMA interface (the guest writes the address of a 16-byte access structure,
 * big-endian: be32 control, be32 length, be64 address; the device performs it at once and
 * writes the control word back, 0 for success). Every guest buffer goes through gm_ptr():
 * a buffer that is not wholly RAM fails that request with the error bit, nothing else. */
#include "devices/fw_cfg.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "devices/services.h"
#include "vmm/guest_mem.h"
#include "vmm/state.h"

/* "QEMU CFG", read back from the DMA address register by firmware probing for DMA. */
#define DMA_SIGNATURE 0x51454d5520434647ULL

struct fw_cfg {
    const struct dev_services *svc;
    pthread_mutex_t lock;      /* selection, offset and DMA address: any vCPU may use them */
    struct fw_cfg_items items; /* read-only once the device exists */
    uint16_t key;
    uint32_t offset;
    uint32_t dma_high;
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t fw_cfg_dma_run(const struct guest_mem *gm, const struct fw_cfg_items *items, uint16_t *key,
                        uint32_t *offset, uint64_t gpa)
{
    uint8_t acc[16];
    if (gm_read(gm, acc, gpa, sizeof(acc)) < 0)
        return FW_CFG_DMA_CTL_ERROR;
    uint32_t control = be32(acc), len = be32(acc + 4);
    uint64_t addr = (uint64_t)be32(acc + 8) << 32 | be32(acc + 12);
    if (control & FW_CFG_DMA_CTL_SELECT)
        *key = (uint16_t)(control >> 16), *offset = 0;
    if (control & FW_CFG_DMA_CTL_WRITE)
        return FW_CFG_DMA_CTL_ERROR; /* no item is writable */
    if (control & FW_CFG_DMA_CTL_READ) {
        if (len) {
            void *dst = gm_ptr(gm, addr, len);
            if (!dst)
                return FW_CFG_DMA_CTL_ERROR;
            fw_cfg_read(items, *key, *offset, dst, len);
        }
    } else if (!(control & FW_CFG_DMA_CTL_SKIP)) {
        return 0;
    }
    *offset = *offset + len < *offset ? UINT32_MAX : *offset + len;
    return 0;
}

static void put_be32_guest(const struct guest_mem *gm, uint64_t gpa, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    (void)gm_write(gm, gpa, b, sizeof(b)); /* the structure was readable: it is RAM */
}

static void fw_cfg_io_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct fw_cfg *f = dev;
    memset(data, 0, len);
    if (off != 1)
        return; /* the selector is write-only */
    pthread_mutex_lock(&f->lock);
    /* The data register is 8 bits wide on x86; a wider read returns successive bytes. */
    fw_cfg_read(&f->items, f->key, f->offset, data, len);
    f->offset = f->offset + len < f->offset ? UINT32_MAX : f->offset + len;
    pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_io_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct fw_cfg *f = dev;
    if (off != 0 || len != 2)
        return; /* data-port writes are deprecated and nothing here is writable */
    uint16_t key;
    memcpy(&key, data, 2);
    pthread_mutex_lock(&f->lock);
    f->key = key, f->offset = 0;
    pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_dma_read(void *dev, uint64_t off, void *data, unsigned len)
{
    /* Big-endian register: byte OFF of the signature is the register's byte OFF. */
    uint8_t sig[8];
    for (int i = 0; i < 8; i++)
        sig[i] = (uint8_t)(DMA_SIGNATURE >> (56 - 8 * i));
    memset(data, 0, len);
    if (off < 8)
        memcpy(data, sig + off, len <= 8 - off ? len : 8 - off);
}

static void fw_cfg_dma_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct fw_cfg *f = dev;
    if (len != 4 || (off != 0 && off != 4))
        return;
    uint32_t v = be32(data); /* the guest wrote the bytes of a big-endian value */
    pthread_mutex_lock(&f->lock);
    if (off == 0) {
        f->dma_high = v;
    } else {
        uint64_t gpa = (uint64_t)f->dma_high << 32 | v;
        f->dma_high = 0;
        uint32_t ctl = fw_cfg_dma_run(f->svc->mem, &f->items, &f->key, &f->offset, gpa);
        put_be32_guest(f->svc->mem, gpa, ctl);
    }
    pthread_mutex_unlock(&f->lock);
}

int fw_cfg_update_file(struct fw_cfg *f, const char *name, const void *data, uint32_t len)
{
    pthread_mutex_lock(&f->lock);
    int r = fw_cfg_replace_file(&f->items, name, data, len);
    pthread_mutex_unlock(&f->lock);
    return r;
}

static const struct dev_ops fw_cfg_io_ops = {
    .name = "fw_cfg",
    .read = fw_cfg_io_read,
    .write = fw_cfg_io_write,
};
static const struct dev_ops fw_cfg_dma_ops = {
    .name = "fw_cfg-dma",
    .read = fw_cfg_dma_read,
    .write = fw_cfg_dma_write,
};

static void fw_cfg_reset(void *dev)
{
    struct fw_cfg *f = dev;
    pthread_mutex_lock(&f->lock);
    f->key = 0, f->offset = 0, f->dma_high = 0;
    pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_destroy(void *dev)
{
    struct fw_cfg *f = dev;
    fw_cfg_items_free(&f->items);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int fw_cfg_save(void *dev, struct st_writer *w);
static int fw_cfg_load(void *dev, const struct st_section *s, char *err, size_t errlen);

int fw_cfg_create(const struct dev_services *svc, struct fw_cfg_items *items, struct fw_cfg **out)
{
    struct fw_cfg *f = calloc(1, sizeof(*f));
    if (!f) {
        fw_cfg_items_free(items);
        return -ENOMEM;
    }
    f->svc = svc;
    f->items = *items;
    fw_cfg_items_init(items);
    pthread_mutex_init(&f->lock, NULL);
    int r = svc->add_device(svc->ctx, "fw_cfg", f, fw_cfg_reset, fw_cfg_destroy);
    if (r < 0) {
        fw_cfg_destroy(f);
        return r;
    }
    svc->on_save(svc->ctx, f, 1, fw_cfg_save, fw_cfg_load, NULL);
    if ((r = dev_map_pio(svc, PORT_FW_CFG, 2, &fw_cfg_io_ops, f)) < 0 ||
        (r = dev_map_pio(svc, PORT_FW_CFG_DMA, 8, &fw_cfg_dma_ops, f)) < 0)
        return r;
    if (out)
        *out = f;
    return 0;
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* What the guest can observe mid-transfer: the selected item, the read offset into it and the
 * DMA address's high half written but not yet followed by the low half (a DMA transfer itself
 * runs to its end within the vCPU's port write, so none is ever in flight). The items are
 * rebuilt from the VM's definition at restore, but the boot order file changes at run time
 * (a reboot after --boot once=...): its contents are saved too. */
static int fw_cfg_save(void *dev, struct st_writer *w)
{
    struct fw_cfg *f = dev;
    pthread_mutex_lock(&f->lock);
    st_put_u32(w, "key", f->key);
    st_put_u32(w, "offset", f->offset);
    st_put_u32(w, "dma_high", f->dma_high);
    int bo = fw_cfg_find(&f->items, "bootorder");
    if (bo >= 0)
        st_put(w, "bootorder", f->items.item[bo].data, f->items.item[bo].len);
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fw_cfg_load(void *dev, const struct st_section *s, char *err, size_t errlen)
{
    struct fw_cfg *f = dev;
    uint64_t key, offset, dma_high;
    int r;
    if ((r = st_need_uint(s, "key", 0xffff, &key, err, errlen)) < 0 ||
        (r = st_need_uint(s, "offset", UINT32_MAX, &offset, err, errlen)) < 0 ||
        (r = st_need_uint(s, "dma_high", UINT32_MAX, &dma_high, err, errlen)) < 0)
        return r;
    uint32_t blen = 0;
    const void *bootorder = st_field(s, "bootorder", &blen);
    if (bootorder && blen > FW_CFG_BOOTORDER_MAX)
        return errf(err, errlen, -EBADMSG, "saved state: fw_cfg bootorder is out of range (%u bytes)", blen);
    pthread_mutex_lock(&f->lock);
    f->key = (uint16_t)key, f->offset = (uint32_t)offset, f->dma_high = (uint32_t)dma_high;
    /* The file exists whenever the device does (vmm/fw_setup.c). */
    if (bootorder && fw_cfg_find(&f->items, "bootorder") >= 0)
        r = fw_cfg_replace_file(&f->items, "bootorder", bootorder, blen);
    pthread_mutex_unlock(&f->lock);
    if (r < 0)
        return errf(err, errlen, r, "saved state: fw_cfg boot order: %s", strerror(-r));
    return 0;
}
