/* The PC devices created against a fake struct dev_services, without a VM or KVM: what a
 * device asks of the machine (ranges, interrupt lines, stop and reset requests) is all it
 * can reach, so these tests see every effect it has. A constructor whose registration fails
 * must leave nothing behind (the ASan build checks for leaks). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "devices/fw_cfg.h"
#include "devices/services.h"
#include "tests/check_main.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"
#include "vmm/state.h"

#define MAX_FAKE 16

struct fake_vm {
    struct dev_services svc;
    struct guest_mem mem;
    uint8_t *ram;
    unsigned ndev, add_limit;
    struct {
        void *dev;
        void (*reset)(void *);
        void (*destroy)(void *);
    } dev[MAX_FAKE];
    unsigned nrange;
    struct {
        enum dev_space space;
        uint64_t base, len;
        const struct dev_ops *ops;
        void *dev;
    } range[MAX_FAKE];
    unsigned stops, resets;
    enum kvmbox_stop reason;
    uint32_t code;
    int line[24];     /* last level per GSI, -1: never driven */
    dev_save_fn save; /* the last device that asked for a saved state */
    dev_load_fn load;
    void *save_dev;
};

static int fake_add_device(void *ctx, const char *name, void *dev, void (*reset)(void *),
                           void (*destroy)(void *))
{
    struct fake_vm *f = ctx;
    if (f->ndev == f->add_limit)
        return -ENOSPC;
    f->dev[f->ndev].dev = dev, f->dev[f->ndev].reset = reset, f->dev[f->ndev].destroy = destroy;
    f->ndev++;
    return 0;
}

static int fake_map_range(void *ctx, enum dev_space space, uint64_t base, uint64_t len,
                          const struct dev_ops *ops, void *dev)
{
    struct fake_vm *f = ctx;
    if (f->nrange == MAX_FAKE)
        return -ENOSPC;
    f->range[f->nrange].space = space, f->range[f->nrange].base = base;
    f->range[f->nrange].len = len, f->range[f->nrange].ops = ops, f->range[f->nrange].dev = dev;
    f->nrange++;
    return 0;
}

static void fake_irq_line(void *ctx, unsigned gsi, bool level)
{
    struct fake_vm *f = ctx;
    ck_assert_uint_lt(gsi, 24);
    f->line[gsi] = level;
}

static void fake_request_stop(void *ctx, enum kvmbox_stop reason, uint32_t code, const char *msg)
{
    struct fake_vm *f = ctx;
    f->stops++, f->reason = reason, f->code = code;
    ck_assert(msg && *msg);
}

static void fake_request_reset(void *ctx)
{
    ((struct fake_vm *)ctx)->resets++;
}

static void fake_on_save(void *ctx, void *dev, unsigned version, dev_save_fn save, dev_load_fn load,
                         void (*save_failed)(void *dev))
{
    struct fake_vm *f = ctx;
    (void)version, (void)save_failed;
    f->save = save, f->load = load, f->save_dev = dev;
}

static void fake_log(void *ctx, const char *line)
{
}

static struct fake_vm *fake_new(unsigned add_limit)
{
    struct fake_vm *f = calloc(1, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    f->ram = calloc(1, 64 << 20);
    ck_assert_ptr_nonnull(f->ram);
    gm_layout(&f->mem, f->ram, 64 << 20);
    f->add_limit = add_limit;
    memset(f->line, 0xff, sizeof(f->line));
    f->svc = (struct dev_services){
        .ctx = f,
        .mem = &f->mem,
        .add_device = fake_add_device,
        .map_range = fake_map_range,
        .irq_line = fake_irq_line,
        .request_stop = fake_request_stop,
        .request_reset = fake_request_reset,
        .log = fake_log,
        .on_save = fake_on_save,
    };
    return f;
}

/* Teardown as the VM does it: every device, last created first. */
static void fake_free(struct fake_vm *f)
{
    while (f->ndev--)
        if (f->dev[f->ndev].destroy)
            f->dev[f->ndev].destroy(f->dev[f->ndev].dev);
    free(f->ram);
    free(f);
}

/* A guest access to PORT, as the bus would deliver it: an offset into the one range.
 * Returns what a read gave. */
static uint32_t pio(struct fake_vm *f, uint16_t port, uint32_t v, unsigned len, bool write)
{
    for (unsigned i = 0; i < f->nrange; i++) {
        if (f->range[i].space != DEV_PIO || port < f->range[i].base ||
            port - f->range[i].base >= f->range[i].len)
            continue;
        if (write)
            f->range[i].ops->write(f->range[i].dev, port - f->range[i].base, &v, len);
        else
            f->range[i].ops->read(f->range[i].dev, port - f->range[i].base, &v, len);
        return v;
    }
    ck_abort_msg("no device at port %#x", port);
    return 0;
}

START_TEST(debug_exit_and_pvpanic_stop_the_vm)
{
    struct fake_vm *f = fake_new(MAX_FAKE);
    ck_assert_int_eq(debug_exit_create(&f->svc), 0);
    ck_assert_int_eq(pvpanic_create(&f->svc), 0);
    pio(f, PORT_DEBUG_EXIT, 0x21, 4, true);
    ck_assert_uint_eq(f->stops, 1);
    ck_assert_int_eq(f->reason, KVMBOX_STOP_DEBUG_EXIT);
    ck_assert_uint_eq(f->code, 0x21);
    pio(f, PORT_PVPANIC, 1, 1, true);
    ck_assert_uint_eq(f->stops, 2);
    ck_assert_int_eq(f->reason, KVMBOX_STOP_PANIC);
    fake_free(f);
}
END_TEST

START_TEST(i8042_resets_through_services)
{
    struct fake_vm *f = fake_new(MAX_FAKE);
    ck_assert_int_eq(i8042_create(&f->svc), 0);
    ck_assert_uint_eq(f->ndev, 1);
    pio(f, PORT_I8042_CMD, 0xaa, 1, true); /* self test: no reset */
    ck_assert_uint_eq(f->resets, 0);
    pio(f, PORT_I8042_CMD, 0xfe, 1, true); /* pulse the reset line */
    ck_assert_uint_eq(f->resets, 1);
    ck_assert_uint_eq(f->stops, 0);
    fake_free(f);
}
END_TEST

START_TEST(pm_sci_and_poweroff)
{
    struct fake_vm *f = fake_new(MAX_FAKE);
    struct pm *pm;
    ck_assert_int_eq(pm_create(&f->svc, &pm), 0);
    pio(f, PORT_PM1A_EVT + 2, 0x0100, 2, true); /* PWRBTN_EN */
    pm_power_button(pm);
    ck_assert_int_eq(f->line[IRQ_SCI], 1);
    pio(f, PORT_PM1A_EVT, 0x0100, 2, true); /* clear PWRBTN_STS */
    ck_assert_int_eq(f->line[IRQ_SCI], 0);
    pio(f, PORT_PM1A_CNT, (ACPI_SLP_TYP_S5 << 10) | 0x2000, 2, true);
    ck_assert_uint_eq(f->stops, 1);
    ck_assert_int_eq(f->reason, KVMBOX_STOP_POWEROFF);
    fake_free(f);
}
END_TEST

START_TEST(rtc_reads_memory_size_from_services)
{
    struct fake_vm *f = fake_new(MAX_FAKE);
    ck_assert_int_eq(rtc_create(&f->svc), 0);
    /* CMOS 0x34/0x35: RAM between 16 MiB and 4 GiB in 64 KiB units: 48 MiB of the 64 MiB
     * the services' guest memory has is 0x300. */
    pio(f, PORT_RTC, 0x34, 1, true);
    ck_assert_uint_eq(pio(f, PORT_RTC + 1, 0, 1, false) & 0xff, 0x00);
    pio(f, PORT_RTC, 0x35, 1, true);
    ck_assert_uint_eq(pio(f, PORT_RTC + 1, 0, 1, false) & 0xff, 0x03);
    fake_free(f);
}
END_TEST

/* fw_cfg with the items firmware sees: the signature and a boot order file. */
static struct fw_cfg *fw_cfg_new(struct fake_vm *f)
{
    struct fw_cfg_items it;
    struct fw_cfg *c = NULL;
    fw_cfg_items_init(&it);
    ck_assert_int_eq(fw_cfg_set(&it, FW_CFG_SIGNATURE, "QEMU", 4), 0);
    ck_assert_int_ge(fw_cfg_add_file(&it, "bootorder", "disk\nHALT", 10), 0);
    ck_assert_int_eq(fw_cfg_create(&f->svc, &it, &c), 0);
    ck_assert_ptr_eq(f->save_dev, c);
    return c;
}

/* The device's section, saved from F into W and parsed back into FILE (st_free it, then
 * st_writer_free W: the section points into W's buffer). */
static struct st_section *fw_cfg_saved(struct fake_vm *f, struct st_writer *w, struct st_file *file)
{
    uint64_t ram_off;
    char err[256];
    st_writer_init(w);
    st_begin(w, "fw_cfg", 0, 1);
    ck_assert_int_eq(f->save(f->save_dev, w), 0);
    st_end(w);
    ck_assert_int_eq(st_finish(w, 0, &ram_off), 0);
    ck_assert_int_eq(st_parse(w->buf, w->len, file, err, sizeof(err)), 0);
    return &file->sections[0];
}

/* fw_cfg's saved state: a guest that selected an item and read part of it, and wrote the high
 * half of a DMA address, goes on where it was on another device with the same items; the boot
 * order replaced at run time comes back; hostile values are refused. */
START_TEST(fw_cfg_saves_its_position)
{
    struct fake_vm *a = fake_new(MAX_FAKE), *b = fake_new(MAX_FAKE);
    struct fw_cfg *ca = fw_cfg_new(a);
    fw_cfg_new(b);
    ck_assert_int_eq(fw_cfg_update_file(ca, "bootorder", "cdrom\nHALT", 11), 0);
    pio(a, PORT_FW_CFG, FW_CFG_SIGNATURE, 2, true);
    ck_assert_uint_eq(pio(a, PORT_FW_CFG + 1, 0, 1, false) & 0xff, 'Q');
    pio(a, PORT_FW_CFG_DMA, 0x01000000, 4, true); /* big endian: high half 1 */
    struct st_file file;
    struct st_writer w;
    struct st_section *s = fw_cfg_saved(a, &w, &file);
    char err[256] = "";
    ck_assert_int_eq(b->load(b->save_dev, s, err, sizeof(err)), 0);
    ck_assert_uint_eq(pio(b, PORT_FW_CFG + 1, 0, 1, false) & 0xff, 'E'); /* the next byte */
    ck_assert_uint_eq(pio(b, PORT_FW_CFG + 1, 0, 1, false) & 0xff, 'M');
    /* the boot order as replaced */
    pio(b, PORT_FW_CFG, FW_CFG_FILE_FIRST, 2, true);
    char bo[11];
    for (unsigned i = 0; i < sizeof(bo); i++)
        bo[i] = (char)pio(b, PORT_FW_CFG + 1, 0, 1, false);
    ck_assert_mem_eq(bo, "cdrom\nHALT", 11);
    st_free(&file);
    st_writer_free(&w);

    /* a key above 16 bits and a boot order longer than any the VM builds */
    uint64_t off;
    static uint8_t big[FW_CFG_BOOTORDER_MAX + 1];
    for (int bad = 0; bad < 2; bad++) {
        st_writer_init(&w);
        st_begin(&w, "fw_cfg", 0, 1);
        st_put_u32(&w, "key", bad == 0 ? 0x10000 : 0);
        st_put_u32(&w, "offset", 0), st_put_u32(&w, "dma_high", 0);
        st_put(&w, "bootorder", big, bad == 1 ? sizeof(big) : 4);
        st_end(&w);
        ck_assert_int_eq(st_finish(&w, 0, &off), 0);
        ck_assert_int_eq(st_parse(w.buf, w.len, &file, err, sizeof(err)), 0);
        ck_assert_int_eq(b->load(b->save_dev, &file.sections[0], err, sizeof(err)), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(err, bad == 0 ? "key" : "bootorder"));
        st_free(&file);
        st_writer_free(&w);
    }
    fake_free(a);
    fake_free(b);
}
END_TEST

/* A constructor whose registration with the VM fails undoes its own work: nothing is left
 * registered and (under ASan) nothing leaks. */
START_TEST(failed_registration_leaves_nothing)
{
    struct fake_vm *f = fake_new(0);
    struct pm *pm = NULL;
    ck_assert_int_eq(i8042_create(&f->svc), -ENOSPC);
    ck_assert_int_eq(pm_create(&f->svc, &pm), -ENOSPC);
    ck_assert_int_eq(rtc_create(&f->svc), -ENOSPC);
    ck_assert_uint_eq(f->ndev, 0);
    ck_assert_uint_eq(f->nrange, 0);
    fake_free(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("devices");
    TCase *tc = tcase_create("services");
    tcase_add_test(tc, debug_exit_and_pvpanic_stop_the_vm);
    tcase_add_test(tc, i8042_resets_through_services);
    tcase_add_test(tc, pm_sci_and_poweroff);
    tcase_add_test(tc, rtc_reads_memory_size_from_services);
    tcase_add_test(tc, failed_registration_leaves_nothing);
    tcase_add_test(tc, fw_cfg_saves_its_position);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
