/* Unit tests for the pure parts of the VMM: the bus, the guest-memory accessor, option
 * parsing and size parsing, and the exit dispatcher fed with synthetic exits. */
#include <check.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_main.h"
#include "vmm/bus.h"
#include "vmm/config.h"
#include "vmm/exit.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"
#include "common/util.h"

/* ---- bus ---- */

struct fake_dev {
    uint64_t last_off;
    uint32_t last_val;
    unsigned reads, writes;
};

static void fake_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct fake_dev *d = dev;
    d->reads++;
    d->last_off = off;
    memset(data, 0x5a, len);
}

static void fake_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct fake_dev *d = dev;
    d->writes++;
    d->last_off = off;
    d->last_val = 0;
    memcpy(&d->last_val, data, len > 4 ? 4 : len);
}

static const struct dev_ops fake_ops = { "fake", fake_read, fake_write };

START_TEST(bus_refuses_bad_ranges)
{
    struct bus b;
    struct fake_dev d = { 0 };
    bus_init(&b, "t");
    ck_assert_int_eq(bus_register(&b, 0x100, 0, &fake_ops, &d), -EINVAL);
    ck_assert_int_eq(bus_register(&b, UINT64_MAX - 1, 4, &fake_ops, &d), -EINVAL);
    ck_assert_int_eq(bus_register(&b, 0x100, 8, &fake_ops, &d), 0);
    ck_assert_int_eq(bus_register(&b, 0x104, 8, &fake_ops, &d), -EEXIST);
    ck_assert_int_eq(bus_register(&b, 0xfc, 5, &fake_ops, &d), -EEXIST);
    ck_assert_int_eq(bus_register(&b, 0xf8, 8, &fake_ops, &d), 0);
    ck_assert_int_eq(bus_register(&b, 0x108, 1, &fake_ops, &d), 0);
    ck_assert_int_eq(bus_register(&b, UINT64_MAX, 1, &fake_ops, &d), 0);
}
END_TEST

START_TEST(bus_dispatches_by_offset)
{
    struct bus b;
    struct fake_dev a = { 0 }, c = { 0 };
    bus_init(&b, "t");
    ck_assert_int_eq(bus_register(&b, 0x3f8, 8, &fake_ops, &a), 0);
    ck_assert_int_eq(bus_register(&b, 0x70, 2, &fake_ops, &c), 0);
    uint32_t v = 0x41;
    ck_assert(bus_access(&b, 0x3fd, &v, 1, true));
    ck_assert_uint_eq(a.last_off, 5);
    ck_assert_uint_eq(a.last_val, 0x41);
    ck_assert(bus_access(&b, 0x71, &v, 1, false));
    ck_assert_uint_eq(c.reads, 1);
    ck_assert_uint_eq(v & 0xff, 0x5a);
    /* An access straddling the end of a range is not claimed. */
    v = 0;
    ck_assert(!bus_access(&b, 0x3ff, &v, 2, false));
    ck_assert_uint_eq(v & 0xffff, 0xffff);
    ck_assert(!bus_access(&b, 0x500, &v, 4, true));
    ck_assert_uint_eq(b.unclaimed, 2);
}
END_TEST

/* ---- guest memory ---- */

START_TEST(gm_bounds)
{
    static uint8_t ram[1 << 16];
    struct guest_mem gm;
    gm_layout(&gm, ram, sizeof(ram));
    ck_assert_ptr_eq(gm_ptr(&gm, 0, 1), ram);
    ck_assert_ptr_eq(gm_ptr(&gm, sizeof(ram) - 1, 1), ram + sizeof(ram) - 1);
    ck_assert_ptr_null(gm_ptr(&gm, sizeof(ram) - 1, 2)); /* straddles the end */
    ck_assert_ptr_null(gm_ptr(&gm, sizeof(ram), 1));     /* just past the end */
    ck_assert_ptr_null(gm_ptr(&gm, 0, 0));               /* zero length refused */
    ck_assert_ptr_null(gm_ptr(&gm, UINT64_MAX, 2));      /* wraps */
    ck_assert_ptr_null(gm_ptr(&gm, 16, UINT64_MAX));     /* wraps */
    uint8_t b = 7;
    ck_assert_int_eq(gm_write(&gm, 100, &b, 1), 0);
    ck_assert_int_eq(gm_write(&gm, sizeof(ram), &b, 1), -EFAULT);
    ck_assert_int_eq(ram[100], 7);
}
END_TEST

START_TEST(gm_pci_hole)
{
    /* 4 GiB of "RAM" that is never touched: only the layout is checked. */
    struct guest_mem gm;
    uint8_t *fake = (uint8_t *)0x10000000000ULL;
    gm_layout(&gm, fake, 4ULL << 30);
    ck_assert_uint_eq(gm.nregions, 2);
    ck_assert_uint_eq(gm_low_end(&gm), LAYOUT_MMIO_START);
    ck_assert_ptr_eq(gm_ptr(&gm, LAYOUT_MMIO_START - 4, 4), fake + LAYOUT_MMIO_START - 4);
    ck_assert_ptr_null(gm_ptr(&gm, LAYOUT_MMIO_START - 4, 8)); /* runs into the hole */
    ck_assert_ptr_null(gm_ptr(&gm, LAYOUT_MMIO_START, 1));
    ck_assert_ptr_null(gm_ptr(&gm, LAYOUT_LAPIC, 4));
    ck_assert_ptr_eq(gm_ptr(&gm, LAYOUT_4G, 1), fake + LAYOUT_MMIO_START);
    uint64_t high = (4ULL << 30) - LAYOUT_MMIO_START;
    ck_assert_ptr_nonnull(gm_ptr(&gm, LAYOUT_4G + high - 1, 1));
    ck_assert_ptr_null(gm_ptr(&gm, LAYOUT_4G + high, 1));
}
END_TEST

/* ---- sizes and options ---- */

START_TEST(sizes)
{
    uint64_t v;
    ck_assert_int_eq(parse_size("512", &v), 0);
    ck_assert_uint_eq(v, 512);
    ck_assert_int_eq(parse_size("64K", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(parse_size("256M", &v), 0);
    ck_assert_uint_eq(v, 256ULL << 20);
    ck_assert_int_eq(parse_size("8G", &v), 0);
    ck_assert_uint_eq(v, 8ULL << 30);
    ck_assert_int_eq(parse_size("1T", &v), 0);
    ck_assert_uint_eq(v, 1ULL << 40);
    ck_assert_int_eq(parse_size("2GiB", &v), 0);
    ck_assert_uint_eq(v, 2ULL << 30);
    ck_assert_int_eq(parse_size("", &v), -EINVAL);
    ck_assert_int_eq(parse_size("-1M", &v), -EINVAL);
    ck_assert_int_eq(parse_size("12Q", &v), -EINVAL);
    ck_assert_int_eq(parse_size("1M2", &v), -EINVAL);
    ck_assert_int_eq(parse_size("99999999999999999T", &v), -ERANGE);
}
END_TEST

static int parse(struct run_options *o, char *err, const char *a0, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return config_parse_run(argc, argv, o, err, 256);
}

START_TEST(run_options)
{
    struct run_options o;
    char err[256];
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "1G", "--cpus", "4", "--cmdline", "a b",
                           "--no-reboot", "--timeout", "9", NULL),
                     0);
    /* paths are made absolute when parsed: a definition made from them works anywhere */
    ck_assert(o.vm.kernel[0] == '/' && !strcmp(strrchr(o.vm.kernel, '/'), "/k"));
    ck_assert_uint_eq(o.vm.mem_size, 1ULL << 30);
    ck_assert_uint_eq(o.vm.cpus, 4);
    ck_assert_str_eq(o.vm.cmdline, "a b");
    ck_assert(o.vm.no_reboot);
    ck_assert_uint_eq(o.vm.timeout_secs, 9);
    /* defaults */
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", NULL), 0);
    ck_assert_uint_eq(o.vm.mem_size, 256ULL << 20);
    ck_assert_uint_eq(o.vm.cpus, 1);
    ck_assert_str_eq(o.vm.cmdline, DEFAULT_CMDLINE);
    /* a bare number of megabytes, like qemu -m */
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "128", NULL), 0);
    ck_assert_uint_eq(o.vm.mem_size, 128ULL << 20);
    ck_assert(!o.vm.hugepages && !o.vm.mem_overcommit);
    /* memory options, in any order */
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "64G,overcommit=on,hugepages=on", NULL),
                     0);
    ck_assert_uint_eq(o.vm.mem_size, 64ULL << 30);
    ck_assert(o.vm.hugepages && o.vm.mem_overcommit);
}
END_TEST

START_TEST(run_options_errors)
{
    struct run_options o;
    char err[256];
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--cpus", "0", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--cpus"));
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "lots", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--mem"));
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "1G,overcommit", NULL), -EINVAL);
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "1G,", NULL), -EINVAL);
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--mem", "1G,reserve=off", NULL), -EINVAL);
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--frobnicate", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--frobnicate"));
    ck_assert_int_eq(parse(&o, err, "run", "--mem", "1G", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--kernel"));
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", NULL), -EINVAL);
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "stray", NULL), -EINVAL);
    ck_assert_int_eq(parse(&o, err, "run", "--kernel", "k", "--timeout", "0", NULL), -EINVAL);
}
END_TEST

/* ---- exit dispatch with synthetic exits ---- */

static struct kvm_run *fake_run(size_t *size)
{
    *size = 4096;
    struct kvm_run *run = calloc(1, *size);
    ck_assert_ptr_nonnull(run);
    return run;
}

START_TEST(exit_pio_string)
{
    size_t size;
    struct kvm_run *run = fake_run(&size);
    struct bus pio, mmio;
    struct fake_dev d = { 0 };
    bus_init(&pio, "pio"), bus_init(&mmio, "mmio");
    ck_assert_int_eq(bus_register(&pio, 0x3f8, 8, &fake_ops, &d), 0);
    run->exit_reason = KVM_EXIT_IO;
    run->io.direction = KVM_EXIT_IO_OUT;
    run->io.port = 0x3f8, run->io.size = 1, run->io.count = 3, run->io.data_offset = 1024;
    memcpy((uint8_t *)run + 1024, "abc", 3);
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_CONTINUE);
    ck_assert_uint_eq(d.writes, 3);
    ck_assert_uint_eq(d.last_val, 'c');
    /* A data area outside the run structure is refused, not read. */
    run->io.data_offset = 4090, run->io.count = 8;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_FATAL);
    run->io.data_offset = 1024, run->io.count = 1, run->io.size = 3;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_FATAL);
    free(run);
}
END_TEST

START_TEST(exit_mmio_and_others)
{
    size_t size;
    struct kvm_run *run = fake_run(&size);
    struct bus pio, mmio;
    struct fake_dev d = { 0 };
    bus_init(&pio, "pio"), bus_init(&mmio, "mmio");
    ck_assert_int_eq(bus_register(&mmio, 0xd0000000, 0x1000, &fake_ops, &d), 0);
    run->exit_reason = KVM_EXIT_MMIO;
    run->mmio.phys_addr = 0xd0000010, run->mmio.len = 4, run->mmio.is_write = 0;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_CONTINUE);
    ck_assert_uint_eq(d.last_off, 0x10);
    ck_assert_uint_eq(run->mmio.data[0], 0x5a);
    run->mmio.len = 9;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_FATAL);
    run->exit_reason = KVM_EXIT_SHUTDOWN;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_SHUTDOWN);
    run->exit_reason = KVM_EXIT_INTR;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_INTERRUPTED);
    run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
    run->internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_FATAL);
    char msg[160];
    exit_describe(run, msg, sizeof(msg));
    ck_assert_ptr_nonnull(strstr(msg, "KVM_EXIT_INTERNAL_ERROR"));
    ck_assert_ptr_nonnull(strstr(msg, "emulation failure"));
    run->exit_reason = KVM_EXIT_SYSTEM_EVENT;
    run->system_event.type = KVM_SYSTEM_EVENT_RESET;
    ck_assert_int_eq(exit_dispatch(run, size, &pio, &mmio), EXIT_RESET);
    free(run);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vmm");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, bus_refuses_bad_ranges);
    tcase_add_test(tc, bus_dispatches_by_offset);
    tcase_add_test(tc, gm_bounds);
    tcase_add_test(tc, gm_pci_hole);
    tcase_add_test(tc, sizes);
    tcase_add_test(tc, run_options);
    tcase_add_test(tc, run_options_errors);
    tcase_add_test(tc, exit_pio_string);
    tcase_add_test(tc, exit_mmio_and_others);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
