/* The virtio 1.x modern PCI transport (virtio 1.2, 4.1): one 64-bit memory BAR holds the
 * common configuration, the ISR, the device configuration, the doorbells and the MSI-X table
 * and PBA. */
#include "virtio/virtio.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/services.h"
#include "vmm/state.h"

/* BAR 0 layout */
#define BAR_SIZE       0x8000
#define OFF_COMMON     0x0000
#define COMMON_LEN     0x38
#define OFF_ISR        0x1000
#define OFF_DEVICE     0x2000
#define DEVICE_MAX     0x1000
#define OFF_NOTIFY     0x3000
#define NOTIFY_MULT    4
#define OFF_MSIX_TABLE 0x4000
#define OFF_MSIX_PBA   0x6000

/* virtio_pci_cap.cfg_type */
#define CAP_COMMON  1
#define CAP_NOTIFY  2
#define CAP_ISR     3
#define CAP_DEVICE  4
#define CAP_PCI_CFG 5

#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASK   0x4000

static void bar_read(void *dev, unsigned bar, uint64_t off, void *data, unsigned len);
static void bar_write(void *dev, unsigned bar, uint64_t off, const void *data, unsigned len);

/* ---- interrupts ------------------------------------------------------------------------ */

static bool vector_masked(struct virtio_dev *vd, unsigned v)
{
    return vd->msix_masked || (vd->msix[v].ctrl & 1);
}

/* Installs the route of vector V and delivers what it held back. vd->lock held. */
static void vector_update(struct virtio_dev *vd, unsigned v)
{
    struct virtio_msix *m = &vd->msix[v];
    if (!vd->msix_enabled || vector_masked(vd, v))
        return;
    vd->svc->msi_set(vd->svc->ctx, m->msi, (uint64_t)m->addr_hi << 32 | m->addr_lo, m->data);
    if (m->pending) {
        m->pending = false;
        vd->svc->msi_fire(vd->svc->ctx, m->msi);
    }
}

static void raise_vector(struct virtio_dev *vd, uint16_t v, uint8_t isr_bit)
{
    pthread_mutex_lock(&vd->lock);
    if (vd->msix_enabled) {
        if (v < vd->nvectors) {
            if (vector_masked(vd, v))
                vd->msix[v].pending = true;
            else
                vd->svc->msi_fire(vd->svc->ctx, vd->msix[v].msi);
        }
    } else {
        vd->isr |= isr_bit;
        pci_set_intx(&vd->pci, true);
    }
    pthread_mutex_unlock(&vd->lock);
}

void virtio_notify(struct virtio_dev *vd, unsigned qi)
{
    raise_vector(vd, __atomic_load_n(&vd->q[qi].vector, __ATOMIC_RELAXED), 1);
}

static void config_interrupt(struct virtio_dev *vd)
{
    raise_vector(vd, __atomic_load_n(&vd->config_vector, __ATOMIC_RELAXED), 2);
}

/* A driver that has not set DRIVER_OK yet reads the configuration as it starts, and must not
 * get notifications before then (virtio 1.2, 3.1.1). */
void virtio_config_changed(struct virtio_dev *vd)
{
    if (__atomic_load_n(&vd->status, __ATOMIC_ACQUIRE) & VIRTIO_STATUS_DRIVER_OK)
        config_interrupt(vd);
}

bool virtio_running(struct virtio_dev *vd)
{
    uint8_t s = __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE);
    return (s & VIRTIO_STATUS_DRIVER_OK) && !(s & VIRTIO_STATUS_NEEDS_RESET);
}

void virtio_queue_error(struct virtio_dev *vd, unsigned qi, const char *why)
{
    struct virtio_queue *q = &vd->q[qi];
    q->broken = true;
    unsigned n = __atomic_fetch_add(&vd->errors_logged, 1, __ATOMIC_RELAXED);
    if (n < VIRTIO_MAX_ERROR_LOGS)
        dev_log(vd->svc, "%s: queue %u: %s; the device needs a reset%s", vd->name, qi, why,
                n + 1 == VIRTIO_MAX_ERROR_LOGS ? " (further errors of this device are not logged)" : "");
    __atomic_or_fetch(&vd->status, VIRTIO_STATUS_NEEDS_RESET, __ATOMIC_SEQ_CST);
    config_interrupt(vd);
}

/* ---- reset ------------------------------------------------------------------------------- */

static void queues_reset(struct virtio_dev *vd)
{
    for (unsigned i = 0; i < vd->nqueues; i++) {
        struct virtio_queue *q = &vd->q[i];
        pthread_mutex_lock(&q->lock);
        virtq_reset(&q->vq);
        q->size = q->max_size;
        q->vector = VIRTIO_MSI_NO_VECTOR;
        q->enabled = q->broken = false;
        q->desc = q->driver = q->device = 0;
        pthread_mutex_unlock(&q->lock);
    }
}

/* Device reset (status 0): the device stops (waiting for requests in flight), then every
 * register goes back to its initial value. MSI-X is PCI state and stays. */
static void device_reset(struct virtio_dev *vd)
{
    if (vd->ops->stop)
        vd->ops->stop(vd);
    queues_reset(vd);
    pthread_mutex_lock(&vd->lock);
    vd->guest_features = 0;
    vd->dfselect = vd->gfselect = 0;
    __atomic_store_n(&vd->status, 0, __ATOMIC_SEQ_CST);
    vd->isr = 0;
    vd->queue_select = 0;
    vd->config_vector = VIRTIO_MSI_NO_VECTOR;
    pci_set_intx(&vd->pci, false);
    pthread_mutex_unlock(&vd->lock);
}

/* Guest reboot: the device reset, and MSI-X back to its power-on state. */
static void vm_reset(void *opaque)
{
    struct virtio_dev *vd = opaque;
    device_reset(vd);
    pthread_mutex_lock(&vd->lock);
    for (unsigned v = 0; v < vd->nvectors; v++) {
        struct virtio_msix *m = &vd->msix[v];
        m->addr_lo = m->addr_hi = m->data = 0, m->ctrl = 1, m->pending = false;
    }
    vd->msix_enabled = false, vd->msix_masked = false;
    vd->pci.cfg[vd->msix_cap + 3] &= (uint8_t) ~((MSIX_CTRL_ENABLE | MSIX_CTRL_MASK) >> 8);
    pthread_mutex_unlock(&vd->lock);
}

/* ---- common configuration ------------------------------------------------------------- */

/* The common configuration structure as the driver would read it now. vd->lock held. */
static void common_snapshot(struct virtio_dev *vd, uint8_t *b)
{
    memset(b, 0, COMMON_LEN);
    virtio_put_le(b, 0x00, vd->dfselect, 4);
    virtio_put_le(b, 0x04, vd->dfselect < 2 ? (uint32_t)(vd->host_features >> (32 * vd->dfselect)) : 0, 4);
    virtio_put_le(b, 0x08, vd->gfselect, 4);
    virtio_put_le(b, 0x0c, vd->gfselect < 2 ? (uint32_t)(vd->guest_features >> (32 * vd->gfselect)) : 0, 4);
    virtio_put_le(b, 0x10, vd->config_vector, 2);
    virtio_put_le(b, 0x12, vd->nqueues, 2);
    virtio_put_le(b, 0x14, __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE), 1);
    virtio_put_le(b, 0x15, vd->config_generation, 1);
    virtio_put_le(b, 0x16, vd->queue_select, 2);
    if (vd->queue_select < vd->nqueues) {
        struct virtio_queue *q = &vd->q[vd->queue_select];
        virtio_put_le(b, 0x18, q->size, 2);
        virtio_put_le(b, 0x1a, q->vector, 2);
        virtio_put_le(b, 0x1c, q->enabled, 2);
        virtio_put_le(b, 0x1e, vd->queue_select, 2); /* notify offset: queue index times the multiplier */
        virtio_put_le(b, 0x20, q->desc, 8);
        virtio_put_le(b, 0x28, q->driver, 8);
        virtio_put_le(b, 0x30, q->device, 8);
    }
}

static uint16_t valid_vector(struct virtio_dev *vd, uint64_t v)
{
    return v < vd->nvectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

static void queue_enable(struct virtio_dev *vd, struct virtio_queue *q, unsigned qi)
{
    pthread_mutex_lock(&q->lock);
    int r = virtq_setup(&q->vq, vd->svc->mem, q->size, q->max_size, q->desc, q->driver, q->device,
                        virtio_has(vd, VIRTIO_F_RING_EVENT_IDX));
    q->enabled = true;
    pthread_mutex_unlock(&q->lock);
    if (r < 0) {
        pthread_mutex_unlock(&vd->lock);
        virtio_queue_error(vd, qi, virtq_strerror(r));
        pthread_mutex_lock(&vd->lock);
    }
}

/* Returns true when the driver asked for a device reset (done by the caller, unlocked). */
static bool common_field_write(struct virtio_dev *vd, unsigned field, uint64_t v)
{
    struct virtio_queue *q = vd->queue_select < vd->nqueues ? &vd->q[vd->queue_select] : NULL;
    uint8_t status = __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE);
    bool q_writable = q && !q->enabled;
    switch (field) {
    case 0x00: vd->dfselect = (uint32_t)v; break;
    case 0x08: vd->gfselect = (uint32_t)v; break;
    case 0x0c:
        if (vd->gfselect < 2 && !(status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned sh = 32 * vd->gfselect;
            vd->guest_features = (vd->guest_features & ~(0xffffffffULL << sh)) | ((v & 0xffffffffULL) << sh);
        }
        break;
    case 0x10: vd->config_vector = valid_vector(vd, v); break;
    case 0x14:
        if (v == 0)
            return true;
        if ((v & VIRTIO_STATUS_FEATURES_OK) && !(status & VIRTIO_STATUS_FEATURES_OK) &&
            ((vd->guest_features & ~vd->host_features) || !virtio_has(vd, VIRTIO_F_VERSION_1)))
            v &= ~(uint64_t)VIRTIO_STATUS_FEATURES_OK; /* refused: the driver reads it back */
        v |= status & VIRTIO_STATUS_NEEDS_RESET;
        __atomic_store_n(&vd->status, (uint8_t)v, __ATOMIC_RELEASE);
        if ((v & VIRTIO_STATUS_DRIVER_OK) && !(status & VIRTIO_STATUS_DRIVER_OK) && vd->ops->start) {
            pthread_mutex_unlock(&vd->lock);
            vd->ops->start(vd);
            pthread_mutex_lock(&vd->lock);
        }
        break;
    case 0x16: vd->queue_select = (uint16_t)v; break;
    case 0x18:
        if (q_writable)
            q->size = (uint16_t)v;
        break;
    case 0x1a:
        if (q)
            __atomic_store_n(&q->vector, valid_vector(vd, v), __ATOMIC_RELAXED);
        break;
    case 0x1c:
        if (q_writable && v == 1)
            queue_enable(vd, q, vd->queue_select);
        break;
    case 0x20:
        if (q_writable)
            q->desc = v;
        break;
    case 0x28:
        if (q_writable)
            q->driver = v;
        break;
    case 0x30:
        if (q_writable)
            q->device = v;
        break;
    default: break; /* read-only */
    }
    return false;
}

static const struct {
    uint8_t off, len;
} common_fields[] = {
    { 0x00, 4 }, { 0x04, 4 }, { 0x08, 4 }, { 0x0c, 4 }, { 0x10, 2 }, { 0x12, 2 }, { 0x14, 1 }, { 0x15, 1 },
    { 0x16, 2 }, { 0x18, 2 }, { 0x1a, 2 }, { 0x1c, 2 }, { 0x1e, 2 }, { 0x20, 8 }, { 0x28, 8 }, { 0x30, 8 },
};

/* Writes of any width: merged into a snapshot, then each touched field is applied. A 32-bit
 * write to half of a 64-bit field keeps the other half. */
static void common_write(struct virtio_dev *vd, unsigned off, const void *data, unsigned len)
{
    uint8_t b[COMMON_LEN];
    bool reset = false;
    pthread_mutex_lock(&vd->lock);
    common_snapshot(vd, b);
    memcpy(b + off, data, len);
    for (size_t i = 0; i < sizeof(common_fields) / sizeof(common_fields[0]); i++) {
        unsigned fo = common_fields[i].off, fl = common_fields[i].len;
        if (off < fo + fl && fo < off + len)
            reset |= common_field_write(vd, fo, virtio_get_le(b, fo, fl));
    }
    pthread_mutex_unlock(&vd->lock);
    if (reset)
        device_reset(vd);
}

/* ---- MSI-X table ----------------------------------------------------------------------- */

static void msix_read(struct virtio_dev *vd, uint64_t off, void *data, unsigned len)
{
    uint8_t b[16 * (VIRTIO_MAX_QUEUES + 1)];
    memset(data, 0, len);
    pthread_mutex_lock(&vd->lock);
    unsigned tlen = 16 * vd->nvectors;
    if (off < tlen && len <= tlen - off) {
        for (unsigned v = 0; v < vd->nvectors; v++) {
            virtio_put_le(b, 16 * v, vd->msix[v].addr_lo, 4),
                virtio_put_le(b, 16 * v + 4, vd->msix[v].addr_hi, 4);
            virtio_put_le(b, 16 * v + 8, vd->msix[v].data, 4),
                virtio_put_le(b, 16 * v + 12, vd->msix[v].ctrl, 4);
        }
        memcpy(data, b + off, len);
    }
    pthread_mutex_unlock(&vd->lock);
}

static void msix_write(struct virtio_dev *vd, uint64_t off, const void *data, unsigned len)
{
    pthread_mutex_lock(&vd->lock);
    unsigned tlen = 16 * vd->nvectors;
    if (off < tlen && len <= tlen - off && (off & 3) == 0 && (len == 4 || len == 8)) {
        for (unsigned i = 0; i < len; i += 4) {
            unsigned v = (unsigned)(off + i) / 16, w = (unsigned)(off + i) % 16;
            uint32_t x;
            memcpy(&x, (const uint8_t *)data + i, 4);
            struct virtio_msix *m = &vd->msix[v];
            if (w == 0)
                m->addr_lo = x;
            else if (w == 4)
                m->addr_hi = x;
            else if (w == 8)
                m->data = x;
            else
                m->ctrl = x & 1;
            vector_update(vd, v);
        }
    }
    pthread_mutex_unlock(&vd->lock);
}

static void pba_read(struct virtio_dev *vd, uint64_t off, void *data, unsigned len)
{
    uint8_t b[8] = { 0 };
    pthread_mutex_lock(&vd->lock);
    for (unsigned v = 0; v < vd->nvectors; v++)
        if (vd->msix[v].pending)
            b[v / 8] |= (uint8_t)(1u << (v % 8));
    pthread_mutex_unlock(&vd->lock);
    memset(data, 0, len);
    if (off < sizeof(b))
        memcpy(data, b + off, len <= sizeof(b) - off ? len : sizeof(b) - off);
}

/* ---- BAR 0 --------------------------------------------------------------------------------- */

static void bar_read(void *dev, unsigned bar, uint64_t off, void *data, unsigned len)
{
    struct virtio_dev *vd = dev;
    memset(data, 0, len);
    if (off < OFF_COMMON + COMMON_LEN) {
        if (off + len > COMMON_LEN)
            return;
        uint8_t b[COMMON_LEN];
        pthread_mutex_lock(&vd->lock);
        common_snapshot(vd, b);
        pthread_mutex_unlock(&vd->lock);
        memcpy(data, b + off, len);
    } else if (off == OFF_ISR) {
        pthread_mutex_lock(&vd->lock); /* reading the ISR clears it and drops INTx */
        *(uint8_t *)data = vd->isr;
        vd->isr = 0;
        pci_set_intx(&vd->pci, false);
        pthread_mutex_unlock(&vd->lock);
    } else if (off >= OFF_DEVICE && off < OFF_DEVICE + DEVICE_MAX) {
        unsigned o = (unsigned)(off - OFF_DEVICE);
        if (o < vd->config_len && len <= vd->config_len - o && vd->ops->config_read)
            vd->ops->config_read(vd, o, data, len);
    } else if (off >= OFF_MSIX_TABLE && off < OFF_MSIX_PBA) {
        msix_read(vd, off - OFF_MSIX_TABLE, data, len);
    } else if (off >= OFF_MSIX_PBA) {
        pba_read(vd, off - OFF_MSIX_PBA, data, len);
    }
}

static void bar_write(void *dev, unsigned bar, uint64_t off, const void *data, unsigned len)
{
    struct virtio_dev *vd = dev;
    if (off < OFF_COMMON + COMMON_LEN) {
        if (off + len <= COMMON_LEN)
            common_write(vd, (unsigned)off, data, len);
    } else if (off >= OFF_DEVICE && off < OFF_DEVICE + DEVICE_MAX) {
        unsigned o = (unsigned)(off - OFF_DEVICE);
        if (o < vd->config_len && len <= vd->config_len - o && vd->ops->config_write)
            vd->ops->config_write(vd, o, data, len);
    } else if (off >= OFF_NOTIFY && off < OFF_NOTIFY + NOTIFY_MULT * VIRTIO_MAX_QUEUES) {
        /* Reached only when no ioeventfd took the write: ring the doorbell by hand. */
        unsigned qi = (unsigned)(off - OFF_NOTIFY) / NOTIFY_MULT;
        uint64_t one = 1;
        if (qi < vd->nqueues && write(vd->q[qi].kick_fd, &one, sizeof(one)) < 0) {
            /* saturated counter: the queue thread is awake anyway */
        }
    } else if (off >= OFF_MSIX_TABLE && off < OFF_MSIX_PBA) {
        msix_write(vd, off - OFF_MSIX_TABLE, data, len);
    }
}

static void bar_map(void *dev, unsigned bar, uint64_t addr, bool enabled)
{
    struct virtio_dev *vd = dev;
    for (unsigned i = 0; i < vd->nqueues; i++) {
        if (vd->bar_live)
            vd->svc->ioeventfd_del(vd->svc->ctx, vd->bar_addr + OFF_NOTIFY + NOTIFY_MULT * i, 2,
                                   vd->q[i].kick_fd);
        if (enabled && vd->svc->ioeventfd_add(vd->svc->ctx, addr + OFF_NOTIFY + NOTIFY_MULT * i, 2,
                                              vd->q[i].kick_fd) < 0) {
            /* No ioeventfd: doorbells exit to bar_write, which signals the same eventfd. */
        }
    }
    vd->bar_live = enabled;
    vd->bar_addr = addr;
}

/* ---- configuration space: MSI-X control and the pci_cfg window -------------------------- */

static void pci_cfg_window(struct virtio_dev *vd, struct pci_func *f, unsigned cap, bool write)
{
    uint8_t barno = f->cfg[cap + 4];
    uint32_t off = pci_cfg32(f, cap + 8), len = pci_cfg32(f, cap + 12);
    if (barno != 0 || !(len == 1 || len == 2 || len == 4) || off >= BAR_SIZE || off % len)
        return;
    if (write)
        bar_write(vd, 0, off, &f->cfg[cap + 16], len);
    else
        bar_read(vd, 0, off, &f->cfg[cap + 16], len);
}

static void cfg_write(void *dev, struct pci_func *f, unsigned off, unsigned len)
{
    struct virtio_dev *vd = dev;
    unsigned msix = vd->msix_cap, pcicfg = vd->pcicfg_cap;
    if (off < msix + 4 && msix + 2 < off + len) {
        uint16_t ctrl = pci_cfg16(f, msix + 2);
        pthread_mutex_lock(&vd->lock);
        bool was = vd->msix_enabled;
        vd->msix_enabled = ctrl & MSIX_CTRL_ENABLE;
        vd->msix_masked = ctrl & MSIX_CTRL_MASK;
        for (unsigned v = 0; v < vd->nvectors; v++)
            vector_update(vd, v);
        if (vd->msix_enabled && !was)
            pci_set_intx(&vd->pci, false);
        pthread_mutex_unlock(&vd->lock);
    }
    if (off < pcicfg + 20 && pcicfg + 16 < off + len)
        pci_cfg_window(vd, f, pcicfg, true);
}

static void cfg_read(void *dev, struct pci_func *f, unsigned off, unsigned len)
{
    unsigned pcicfg = ((struct virtio_dev *)dev)->pcicfg_cap;
    if (off < pcicfg + 20 && pcicfg + 16 < off + len)
        pci_cfg_window(dev, f, pcicfg, false);
}

static const struct pci_func_ops virtio_pci_ops = {
    .bar_read = bar_read,
    .bar_write = bar_write,
    .bar_map = bar_map,
    .cfg_write = cfg_write,
    .cfg_read = cfg_read,
};

/* ---- construction ----------------------------------------------------------------------- */

static unsigned add_vcap(struct pci_func *f, uint8_t type, unsigned len, uint32_t off, uint32_t size)
{
    unsigned c = pci_cap_add(f, PCI_CAP_ID_VNDR, len);
    if (!c)
        return 0;
    f->cfg[c + 2] = (uint8_t)len;
    f->cfg[c + 3] = type;
    f->cfg[c + 4] = 0; /* BAR 0 */
    pci_set32(f, c + 8, off);
    pci_set32(f, c + 12, size);
    return c;
}

static int build_caps(struct virtio_dev *vd)
{
    struct pci_func *f = &vd->pci;
    unsigned notify_len = NOTIFY_MULT * vd->nqueues;
    unsigned c1 = add_vcap(f, CAP_COMMON, 16, OFF_COMMON, COMMON_LEN);
    unsigned c2 = add_vcap(f, CAP_NOTIFY, 20, OFF_NOTIFY, notify_len);
    unsigned c3 = add_vcap(f, CAP_ISR, 16, OFF_ISR, 1);
    unsigned c4 = add_vcap(f, CAP_DEVICE, 16, OFF_DEVICE, vd->config_len ? vd->config_len : 1);
    unsigned c5 = add_vcap(f, CAP_PCI_CFG, 20, 0, 0);
    unsigned mx = pci_cap_add(f, PCI_CAP_ID_MSIX, 12);
    if (!c1 || !c2 || !c3 || !c4 || !c5 || !mx)
        return -ENOSPC;
    pci_set32(f, c2 + 16, NOTIFY_MULT);
    /* pci_cfg: bar, offset, length and data are the driver's to write. */
    f->wmask[c5 + 4] = 0xff;
    memset(&f->wmask[c5 + 8], 0xff, 12);
    pci_set16(f, mx + 2, (uint16_t)(vd->nvectors - 1));
    f->wmask[mx + 3] = (MSIX_CTRL_ENABLE | MSIX_CTRL_MASK) >> 8;
    pci_set32(f, mx + 4, OFF_MSIX_TABLE | 0);
    pci_set32(f, mx + 8, OFF_MSIX_PBA | 0);
    vd->msix_cap = (uint8_t)mx;
    vd->pcicfg_cap = (uint8_t)c5;
    return 0;
}

static void vd_destroy(void *opaque)
{
    struct virtio_dev *vd = opaque;
    vd->ops->destroy(vd);
}

static int virtio_save(void *dev, struct st_writer *w);
static int virtio_load(void *dev, const struct st_section *s, char *err, size_t errlen);
static void virtio_save_failed(void *dev);

int virtio_pci_init(struct virtio_dev *vd, const struct dev_services *svc, struct pci_host *pci,
                    const char *name, uint16_t device_id, uint32_t pci_class, unsigned nqueues,
                    uint16_t queue_max, unsigned config_len, uint64_t features,
                    const struct virtio_dev_ops *ops, void *priv)
{
    if (nqueues == 0 || nqueues > VIRTIO_MAX_QUEUES || config_len > DEVICE_MAX)
        return -EINVAL;
    memset(vd, 0, sizeof(*vd));
    vd->svc = svc, vd->name = name, vd->device_id = device_id, vd->ops = ops, vd->priv = priv;
    vd->nqueues = nqueues, vd->config_len = config_len, vd->nvectors = nqueues + 1;
    vd->host_features = features | 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_INDIRECT_DESC |
                        1ULL << VIRTIO_F_RING_EVENT_IDX;
    vd->config_vector = VIRTIO_MSI_NO_VECTOR;
    pthread_mutex_init(&vd->lock, NULL);
    for (unsigned v = 0; v < vd->nvectors; v++)
        vd->msix[v].msi = -1, vd->msix[v].ctrl = 1;
    for (unsigned i = 0; i < nqueues; i++) {
        pthread_mutex_init(&vd->q[i].lock, NULL);
        vd->q[i].max_size = vd->q[i].size = queue_max;
        vd->q[i].vector = VIRTIO_MSI_NO_VECTOR;
        vd->q[i].kick_fd = -1;
    }
    /* From here on the VM owns the device: a failure below is undone by its teardown. */
    int r = svc->add_device(svc->ctx, name, vd, vm_reset, vd_destroy);
    if (r < 0) {
        virtio_pci_destroy(vd);
        return r;
    }
    svc->on_save(svc->ctx, vd, 1, virtio_save, virtio_load, virtio_save_failed);
    vd->registered = true;
    for (unsigned i = 0; i < nqueues; i++)
        if ((vd->q[i].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            return -errno;
    for (unsigned v = 0; v < vd->nvectors; v++) {
        if ((r = svc->msi_alloc(svc->ctx)) < 0)
            return r;
        vd->msix[v].msi = r;
    }
    pci_func_init(&vd->pci, 0x1af4, (uint16_t)(0x1040 + device_id), pci_class, 1, 0x1af4, 0x40,
                  &virtio_pci_ops, vd);
    pci_func_bar(&vd->pci, 0, BAR_SIZE, true);
    if ((r = build_caps(vd)) < 0)
        return r;
    r = pci_register(pci, &vd->pci);
    return r < 0 ? r : 0;
}

void virtio_pci_destroy(struct virtio_dev *vd)
{
    for (unsigned v = 0; v < vd->nvectors; v++)
        if (vd->msix[v].msi >= 0)
            vd->svc->msi_free(vd->svc->ctx, vd->msix[v].msi);
    for (unsigned i = 0; i < vd->nqueues; i++) {
        if (vd->bar_live && vd->q[i].kick_fd >= 0)
            vd->svc->ioeventfd_del(vd->svc->ctx, vd->bar_addr + OFF_NOTIFY + NOTIFY_MULT * i, 2,
                                   vd->q[i].kick_fd);
        if (vd->q[i].kick_fd >= 0)
            close(vd->q[i].kick_fd);
        pthread_mutex_destroy(&vd->q[i].lock);
    }
    pthread_mutex_destroy(&vd->lock);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* Stored as they are: kvmbox runs on x86 hosts only, so these are little endian. */
struct saved_queue {
    uint64_t desc, driver, device;
    uint16_t size, vector, last_avail, used_idx, signalled;
    uint8_t enabled, broken, signalled_valid, pad[7];
};

struct saved_vector {
    uint32_t addr_lo, addr_hi, data, ctrl;
    uint8_t pending, pad[7];
};

static int virtio_save(void *dev, struct st_writer *w)
{
    struct virtio_dev *vd = dev;
    uint8_t status = __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE);
    /* The device's threads stop taking chains once DRIVER_OK is gone (virtio_running); the
     * queue locks are then taken once to wait for a chain being handled. */
    if (status & VIRTIO_STATUS_DRIVER_OK) {
        __atomic_store_n(&vd->status, (uint8_t)(status & ~VIRTIO_STATUS_DRIVER_OK), __ATOMIC_SEQ_CST);
        vd->save_stopped = true;
    }
    for (unsigned i = 0; i < vd->nqueues; i++) {
        pthread_mutex_lock(&vd->q[i].lock);
        pthread_mutex_unlock(&vd->q[i].lock);
    }
    int r = vd->ops->save ? vd->ops->save(vd, w) : 0;
    if (r < 0)
        return r;
    struct saved_queue q[VIRTIO_MAX_QUEUES];
    struct saved_vector v[VIRTIO_MAX_QUEUES + 1];
    memset(q, 0, sizeof(q)), memset(v, 0, sizeof(v));
    pthread_mutex_lock(&vd->lock);
    for (unsigned i = 0; i < vd->nqueues; i++) {
        struct virtio_queue *s = &vd->q[i];
        pthread_mutex_lock(&s->lock);
        q[i] = (struct saved_queue){
            .desc = s->desc,
            .driver = s->driver,
            .device = s->device,
            .size = s->size,
            .vector = s->vector,
            .last_avail = s->vq.last_avail,
            .used_idx = s->vq.used_idx,
            .signalled = s->vq.signalled,
            .enabled = s->enabled,
            .broken = s->broken,
            .signalled_valid = s->vq.signalled_valid,
        };
        pthread_mutex_unlock(&s->lock);
    }
    for (unsigned i = 0; i < vd->nvectors; i++) {
        struct virtio_msix *m = &vd->msix[i];
        v[i] = (struct saved_vector){ m->addr_lo, m->addr_hi, m->data, m->ctrl, m->pending, { 0 } };
    }
    st_put_u64(w, "guest_features", vd->guest_features);
    st_put_u32(w, "dfselect", vd->dfselect), st_put_u32(w, "gfselect", vd->gfselect);
    st_put_u8(w, "status", status);
    st_put_u8(w, "config_generation", vd->config_generation);
    st_put_u8(w, "isr", vd->isr);
    st_put_u32(w, "queue_select", vd->queue_select);
    st_put_u32(w, "config_vector", vd->config_vector);
    st_put_u8(w, "msix_enabled", vd->msix_enabled), st_put_u8(w, "msix_masked", vd->msix_masked);
    st_put(w, "queues", q, (uint32_t)(vd->nqueues * sizeof(q[0])));
    st_put(w, "vectors", v, (uint32_t)(vd->nvectors * sizeof(v[0])));
    pthread_mutex_unlock(&vd->lock);
    return 0;
}

static void virtio_save_failed(void *dev)
{
    struct virtio_dev *vd = dev;
    if (!vd->save_stopped)
        return;
    vd->save_stopped = false;
    __atomic_or_fetch(&vd->status, VIRTIO_STATUS_DRIVER_OK, __ATOMIC_SEQ_CST);
    if (vd->ops->start)
        vd->ops->start(vd);
}

/* One queue's registers, then its ring state over the (restored) guest RAM; the rings are
 * checked by virtq_setup as when the driver enables a queue. vd->lock held. */
static int load_queue(struct virtio_dev *vd, unsigned i, const struct saved_queue *s, char *err,
                      size_t errlen)
{
    struct virtio_queue *q = &vd->q[i];
    if (s->size > q->max_size || (uint16_t)(s->last_avail - s->used_idx) > s->size ||
        (s->vector != VIRTIO_MSI_NO_VECTOR && s->vector >= vd->nvectors))
        return errf(err, errlen, -EBADMSG, "saved state: queue %u of %s is out of range", i, vd->name);
    pthread_mutex_lock(&q->lock);
    virtq_reset(&q->vq);
    q->size = s->size, q->vector = s->vector, q->desc = s->desc, q->driver = s->driver;
    q->device = s->device, q->enabled = s->enabled, q->broken = s->broken;
    int r = 0;
    if (q->enabled) {
        r = virtq_setup(&q->vq, vd->svc->mem, q->size, q->max_size, q->desc, q->driver, q->device,
                        virtio_has(vd, VIRTIO_F_RING_EVENT_IDX));
        q->vq.last_avail = s->last_avail, q->vq.used_idx = s->used_idx;
        q->vq.signalled = s->signalled, q->vq.signalled_valid = s->signalled_valid;
    }
    pthread_mutex_unlock(&q->lock);
    if (r < 0)
        return errf(err, errlen, -EBADMSG, "saved state: queue %u of %s: %s", i, vd->name, virtq_strerror(r));
    return 0;
}

static int virtio_load(void *dev, const struct st_section *sec, char *err, size_t errlen)
{
    struct virtio_dev *vd = dev;
    uint64_t f[10];
    static const char *const names[10] = { "guest_features",    "dfselect",   "gfselect",     "status",
                                           "config_generation", "isr",        "queue_select", "config_vector",
                                           "msix_enabled",      "msix_masked" };
    static const uint64_t max[10] = {
        UINT64_MAX, UINT32_MAX, UINT32_MAX, 0xff, 0xff, 3, 0xffff, 0xffff, 1, 1
    };
    struct saved_queue q[VIRTIO_MAX_QUEUES];
    struct saved_vector v[VIRTIO_MAX_QUEUES + 1];
    int r;
    for (unsigned i = 0; i < 10; i++)
        if ((r = st_need_uint(sec, names[i], max[i], &f[i], err, errlen)) < 0)
            return r;
    if ((r = st_need(sec, "queues", q, (uint32_t)(vd->nqueues * sizeof(q[0])), err, errlen)) < 0 ||
        (r = st_need(sec, "vectors", v, (uint32_t)(vd->nvectors * sizeof(v[0])), err, errlen)) < 0)
        return r;
    if ((f[0] & ~vd->host_features) || (f[7] != VIRTIO_MSI_NO_VECTOR && f[7] >= vd->nvectors))
        return errf(err, errlen, -EBADMSG, "saved state: %s has features or vectors it does not offer",
                    vd->name);
    pthread_mutex_lock(&vd->lock);
    vd->guest_features = f[0];
    vd->dfselect = (uint32_t)f[1], vd->gfselect = (uint32_t)f[2];
    vd->config_generation = (uint8_t)f[4], vd->isr = (uint8_t)f[5];
    vd->queue_select = (uint16_t)f[6], vd->config_vector = (uint16_t)f[7];
    for (unsigned i = 0; i < vd->nqueues && r == 0; i++)
        r = load_queue(vd, i, &q[i], err, errlen);
    for (unsigned i = 0; i < vd->nvectors; i++) {
        struct virtio_msix *m = &vd->msix[i];
        m->addr_lo = v[i].addr_lo, m->addr_hi = v[i].addr_hi, m->data = v[i].data;
        m->ctrl = v[i].ctrl & 1, m->pending = v[i].pending & 1;
    }
    vd->msix_enabled = f[8], vd->msix_masked = f[9];
    if (r == 0)
        for (unsigned i = 0; i < vd->nvectors; i++)
            vector_update(vd, i); /* routes installed, what was pending delivered */
    __atomic_store_n(&vd->status, (uint8_t)f[3], __ATOMIC_SEQ_CST);
    if (r == 0 && vd->isr && !vd->msix_enabled)
        pci_set_intx(&vd->pci, true);
    pthread_mutex_unlock(&vd->lock);
    if (r == 0 && vd->ops->load)
        r = vd->ops->load(vd, sec, err, errlen);
    /* Started as when the driver set DRIVER_OK: it looks at its queues (kicks itself). */
    if (r == 0 && virtio_running(vd) && vd->ops->start)
        vd->ops->start(vd);
    return r;
}
