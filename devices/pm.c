/* ACPI fixed-hardware power management (ACPI spec, "ACPI Hardware Specification"):
 * PM1a event block (status, enable), PM1a control block (SCI_EN, SLP_TYP, SLP_EN), the
 * 3.579545 MHz PM timer, and the FADT reset register. Sleeping in S5 powers the VM off;
 * the reset register resets it. The SCI is raised for enabled status bits (power button). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/layout.h"
#include "common/util.h"
#include "vmm/state.h"

#define PM1_STS_TMR        0x0001
#define PM1_STS_PWRBTN     0x0100
#define PM1_STS_WAK        0x8000
#define PM1_CNT_SCI_EN     0x0001
#define PM1_CNT_SLP_EN     0x2000
#define PM1_CNT_SLP_TYP(v) (((v) >> 10) & 7)
#define PM_TIMER_HZ        3579545ULL

struct pm {
    const struct dev_services *svc;
    pthread_mutex_t lock;
    uint16_t sts, en, cnt;
    bool sci_level;
    uint64_t t0;
};

static void update_sci(struct pm *p)
{
    bool level = (p->sts & p->en) != 0 && (p->cnt & PM1_CNT_SCI_EN);
    if (level != p->sci_level) {
        p->sci_level = level;
        p->svc->irq_line(p->svc->ctx, IRQ_SCI, level);
    }
}

static uint32_t pm_timer(const struct pm *p)
{
    uint64_t ns = monotonic_ns() - p->t0;
    /* ns * 3579545 / 1e9 without overflow for centuries of uptime */
    uint64_t ticks = (ns / 1000000000ULL) * PM_TIMER_HZ + (ns % 1000000000ULL) * PM_TIMER_HZ / 1000000000ULL;
    return (uint32_t)(ticks & 0xffffff); /* 24-bit timer (FADT TMR_VAL_EXT clear) */
}

static uint32_t reg_read(struct pm *p, unsigned off)
{
    uint8_t bytes[PORT_PM_SIZE] = { 0 };
    memcpy(&bytes[0], &p->sts, 2);
    memcpy(&bytes[2], &p->en, 2);
    memcpy(&bytes[4], &p->cnt, 2);
    uint32_t t = pm_timer(p);
    memcpy(&bytes[8], &t, 4);
    uint32_t v = 0;
    memcpy(&v, &bytes[off], off + 4 <= PORT_PM_SIZE ? 4 : PORT_PM_SIZE - off);
    return v;
}

static void pm_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct pm *p = dev;
    pthread_mutex_lock(&p->lock);
    uint32_t v = reg_read(p, (unsigned)off);
    pthread_mutex_unlock(&p->lock);
    memcpy(data, &v, len > 4 ? 4 : len);
}

static void write_cnt(struct pm *p, uint16_t v)
{
    p->cnt = (uint16_t)((v & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN);
    if (!(v & PM1_CNT_SLP_EN))
        return;
    if (PM1_CNT_SLP_TYP(v) == ACPI_SLP_TYP_S5)
        p->svc->request_stop(p->svc->ctx, KVMBOX_STOP_POWEROFF, 0, "guest powered off (ACPI S5)");
    /* Other sleep states are not offered in the DSDT; a guest asking anyway keeps running. */
}

static void pm_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct pm *p = dev;
    uint32_t v = 0;
    memcpy(&v, data, len > 4 ? 4 : len);
    pthread_mutex_lock(&p->lock);
    /* Byte-granular: a 16-bit write at 0 touches sts, a 32-bit write touches sts and en. */
    for (unsigned i = 0; i < len; i++) {
        unsigned reg = (unsigned)off + i;
        uint8_t b = (uint8_t)(v >> (8 * i));
        if (reg < 2)
            p->sts &= (uint16_t) ~(b << (8 * reg)); /* write 1 to clear */
        else if (reg < 4)
            p->en = (uint16_t)((p->en & ~(0xff << (8 * (reg - 2)))) | b << (8 * (reg - 2)));
    }
    if (off == 4 && len >= 2)
        write_cnt(p, (uint16_t)v);
    else if (off == 4 || off == 5)
        write_cnt(p,
                  (uint16_t)(off == 4 ? (p->cnt & 0xff00) | (v & 0xff) : (p->cnt & 0xff) | (v & 0xff) << 8));
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
}

static const struct dev_ops pm_ops = { .name = "acpi-pm", .read = pm_read, .write = pm_write };

static void pm_reset(void *dev)
{
    struct pm *p = dev;
    pthread_mutex_lock(&p->lock);
    p->sts = 0, p->en = 0;
    p->cnt = PM1_CNT_SCI_EN; /* no SMI_CMD in the FADT: always in ACPI mode */
    p->sci_level = false;
    p->t0 = monotonic_ns();
    pthread_mutex_unlock(&p->lock);
}

static void pm_destroy(void *dev)
{
    struct pm *p = dev;
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void pm_power_button(struct pm *p)
{
    pthread_mutex_lock(&p->lock);
    p->sts |= PM1_STS_PWRBTN;
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
}

static int pm_save(void *dev, struct st_writer *w);
static int pm_load(void *dev, const struct st_section *s, char *err, size_t errlen);

int pm_create(const struct dev_services *svc, struct pm **out)
{
    struct pm *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->svc = svc;
    pthread_mutex_init(&p->lock, NULL);
    pm_reset(p);
    int r = svc->add_device(svc->ctx, "acpi-pm", p, pm_reset, pm_destroy);
    if (r < 0) {
        pm_destroy(p);
        return r;
    }
    svc->on_save(svc->ctx, p, 1, pm_save, pm_load, NULL);
    *out = p;
    /* The reset register at 0xCF9 sits inside the PCI configuration ports: devices/pci.c. */
    return dev_map_pio(svc, PORT_PM_BASE, PORT_PM_SIZE, &pm_ops, p);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* The PM timer is kept as the time it has run, so it goes on from there: the guest sees no
 * leap across the save. */
static int pm_save(void *dev, struct st_writer *w)
{
    struct pm *p = dev;
    pthread_mutex_lock(&p->lock);
    st_put_u32(w, "sts", p->sts), st_put_u32(w, "en", p->en), st_put_u32(w, "cnt", p->cnt);
    st_put_u8(w, "sci_level", p->sci_level);
    st_put_u64(w, "timer_ns", monotonic_ns() - p->t0);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static int pm_load(void *dev, const struct st_section *s, char *err, size_t errlen)
{
    struct pm *p = dev;
    uint64_t sts, en, cnt, lvl, ns;
    int r;
    if ((r = st_need_uint(s, "sts", 0xffff, &sts, err, errlen)) < 0 ||
        (r = st_need_uint(s, "en", 0xffff, &en, err, errlen)) < 0 ||
        (r = st_need_uint(s, "cnt", 0xffff, &cnt, err, errlen)) < 0 ||
        (r = st_need_uint(s, "sci_level", 1, &lvl, err, errlen)) < 0 ||
        (r = st_need_uint(s, "timer_ns", UINT64_MAX, &ns, err, errlen)) < 0)
        return r;
    pthread_mutex_lock(&p->lock);
    p->sts = (uint16_t)sts, p->en = (uint16_t)en, p->cnt = (uint16_t)cnt;
    p->t0 = monotonic_ns() - ns;
    p->sci_level = false; /* raised again if it was high (see serial_load) */
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
    return 0;
}
