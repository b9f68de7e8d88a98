/* VM construction, the run loop (stop, reset, timeout) and teardown, and the services the
 * VM gives its devices.
 *
 * Construction is an explicit ordered table (vm_stages: configuration, /dev/kvm, vCPU
 * threads, RAM, devices, control socket, machine); kvmbox_vm_create stops at the first
 * failing stage and unwinds from it back to the first, and kvmbox_vm_destroy stops the
 * threads that act on the VM, then unwinds the same table in reverse. The devices stage is
 * itself a table (device_table), in PCI slot order; a failing row destroys every device
 * created before it, in reverse. Only the last stage, the "machine" (KVM VM, irqchip and
 * routes, firmware or kernel, vCPUs), is rebuilt on a guest reset; devices and the console
 * live for the whole run and are only reset.
 *
 * Devices never see struct vm: they get struct dev_services (devices/services.h), filled
 * here by services_init, with the VM as its opaque context. */
#include "vmm/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "devices/devices.h"
#include "devices/pci.h"
#include "firmware/acpi.h"
#include "firmware/e820.h"
#include "vmm/api.h"
#include "vmm/console.h"
#include "vmm/kvm.h"
#include "vmm/layout.h"
#include "vmm/snapshot.h"
#include "vmm/trace.h"
#include "common/util.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/scsi.h"
#include "vmm/vcpu.h"

#define MIN_MEM           (8ULL << 20)
#define CONSOLE_RING_SIZE (256 * 1024) /* console output kept for clients not attached */
#define MAX_E820          32

/* ---- services for devices (devices/services.h) ------------------------------------- */

static void svc_irq_line(void *ctx, unsigned gsi, bool level)
{
    struct vm *vm = ctx;
    pthread_rwlock_rdlock(&vm->irq_lock);
    if (vm->vm_fd >= 0) {
        struct kvm_irq_level irq = { .irq = gsi, .level = level };
        ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq);
    }
    pthread_rwlock_unlock(&vm->irq_lock);
}

void vm_request_stop(struct vm *vm, enum kvmbox_stop reason, uint32_t code, const char *fmt, ...)
{
    if (reason == KVMBOX_STOP_POWEROFF &&
        __atomic_exchange_n(&vm->reboot_on_poweroff, false, __ATOMIC_SEQ_CST)) {
        vm_request_reset(vm);
        return;
    }
    pthread_mutex_lock(&vm->lock);
    if (!vm->stop_requested) {
        vm->result.reason = reason;
        vm->result.debug_code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->result.message, sizeof(vm->result.message), fmt, ap);
        va_end(ap);
        if (reason == KVMBOX_STOP_ERROR && !vm->result.error)
            vm->result.error = -EIO;
        trace_mark("stop requested");
        __atomic_store_n(&vm->stop_requested, true, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&vm->cond);
        pthread_cond_broadcast(&vm->pause_cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

/* One line for the host (kvmbox_config.log), from any thread; nothing without a log
 * callback. The library never prints: everything it has to say goes here or into a result. */
static void svc_log(void *ctx, const char *line)
{
    struct vm *vm = ctx;
    if (vm->cfg.log)
        vm->cfg.log(vm->cfg.log_opaque, line);
}

static void svc_request_stop(void *ctx, enum kvmbox_stop reason, uint32_t code, const char *msg)
{
    vm_request_stop(ctx, reason, code, "%s", msg);
}

static void svc_request_reset(void *ctx)
{
    vm_request_reset(ctx);
}

void vm_request_reset(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    __atomic_store_n(&vm->reset_requested, true, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&vm->cond);
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->lock);
}

void vm_console_output(void *opaque, const uint8_t *buf, size_t len)
{
    struct vm *vm = opaque;
    trace_mark_once("first guest output");
    pthread_mutex_lock(&vm->out_lock);
    if (vm->cfg.console_out >= 0)
        write_full(vm->cfg.console_out, buf, len);
    ring_put(&vm->out_ring, buf, len);
    /* Without an attached client nobody reads the ring until one attaches (it then gets
     * what it missed), so the API thread is not woken for every byte the guest prints. */
    bool wake = vm->console_listeners > 0;
    if (vm->fw.size && fw_watch_feed(&vm->fw_watch, buf, len))
        __atomic_store_n(&vm->no_boot_seen, true, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&vm->out_lock);
    if (wake) {
        uint64_t one = 1;
        if (write(vm->out_event_fd, &one, sizeof(one)) < 0) {
            /* a full eventfd counter still wakes the reader */
        }
    }
}

void vm_vcpu_checkpoint(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    while (vm->paused && !vm->stop_requested && !vm->reset_requested) {
        vm->vcpus_parked++;
        pthread_cond_broadcast(&vm->pause_cond);
        pthread_cond_wait(&vm->pause_cond, &vm->lock);
        vm->vcpus_parked--;
    }
    pthread_mutex_unlock(&vm->lock);
}

/* Parks every vCPU outside KVM_RUN and saves the guest's kvmclock, so that on resume the
 * guest sees no time pass (as with QEMU's stop/cont). */
int vm_pause(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->paused || vm->stop_requested) {
        int r = vm->paused ? 0 : -ESHUTDOWN;
        pthread_mutex_unlock(&vm->lock);
        return r;
    }
    __atomic_store_n(&vm->paused, true, __ATOMIC_SEQ_CST); /* vCPUs peek at it without the lock (vcpu.c) */
    pthread_mutex_unlock(&vm->lock);
    vcpus_kick(vm);
    pthread_mutex_lock(&vm->lock);
    while (vm->vcpus_parked < vm->ncpus && !vm->stop_requested && !vm->reset_requested)
        pthread_cond_wait(&vm->pause_cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    struct kvm_clock_data clock = { 0 };
    pthread_rwlock_rdlock(&vm->irq_lock);
    if (vm->vm_fd >= 0 && ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) == 0)
        vm->kvmclock = clock.clock;
    else
        vm->kvmclock = 0;
    pthread_rwlock_unlock(&vm->irq_lock);
    return 0;
}

int vm_resume(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool was = vm->paused;
    pthread_mutex_unlock(&vm->lock);
    if (!was)
        return 0;
    pthread_rwlock_rdlock(&vm->irq_lock);
    if (vm->kvmclock && vm->vm_fd >= 0) {
        struct kvm_clock_data clock = { .clock = vm->kvmclock };
        ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock);
    }
    pthread_rwlock_unlock(&vm->irq_lock);
    pthread_mutex_lock(&vm->lock);
    __atomic_store_n(&vm->paused, false, __ATOMIC_SEQ_CST); /* vCPUs peek at it without the lock (vcpu.c) */
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

static void svc_thread_sandbox(void *ctx, enum sandbox_class cls)
{
    vm_thread_sandbox(ctx, cls);
}

void vm_thread_sandbox(struct vm *vm, enum sandbox_class cls)
{
    int r = sandbox_enter(cls, !vm->cfg.no_sandbox);
    if (r < 0)
        vm_request_stop(
            vm, KVMBOX_STOP_ERROR, 0,
            "cannot enter the seccomp sandbox of the %s thread: %s (--sandbox off runs without it)",
            sandbox_class_name(cls), strerror(-r));
    sandbox_selftest(cls);
}

bool vm_stopping(struct vm *vm)
{
    return __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&vm->reset_requested, __ATOMIC_SEQ_CST);
}

static int svc_add_device(void *ctx, const char *name, void *dev, void (*reset)(void *),
                          void (*destroy)(void *))
{
    struct vm *vm = ctx;
    if (vm->ndevices == VM_MAX_DEVICES)
        return -ENOSPC;
    vm->devices[vm->ndevices++] = (struct vm_device){
        .name = name, .dev = dev, .reset = reset, .destroy = destroy
    };
    return 0;
}

static void svc_on_quiesce(void *ctx, void *dev, void (*quiesce)(void *))
{
    struct vm *vm = ctx;
    for (unsigned i = 0; i < vm->ndevices; i++)
        if (vm->devices[i].dev == dev)
            vm->devices[i].quiesce = quiesce;
}

static int svc_map_range(void *ctx, enum dev_space space, uint64_t base, uint64_t len,
                         const struct dev_ops *ops, void *dev)
{
    struct vm *vm = ctx;
    return bus_register(space == DEV_PIO ? &vm->pio : &vm->mmio, base, len, ops, dev);
}

static int svc_msi_alloc(void *ctx)
{
    int fd;
    return irq_msi_alloc(ctx, &fd);
}

static void svc_msi_free(void *ctx, int msi)
{
    irq_msi_free(ctx, msi);
}

static int svc_msi_set(void *ctx, int msi, uint64_t addr, uint32_t data)
{
    return irq_msi_set(ctx, msi, addr, data);
}

static void svc_msi_fire(void *ctx, int msi)
{
    irq_msi_fire(ctx, msi);
}

static int svc_ioeventfd_add(void *ctx, uint64_t addr, uint32_t len, int fd)
{
    return irq_ioeventfd_add(ctx, addr, len, fd);
}

static void svc_ioeventfd_del(void *ctx, uint64_t addr, uint32_t len, int fd)
{
    irq_ioeventfd_del(ctx, addr, len, fd);
}

static void svc_on_save(void *ctx, void *dev, unsigned version, dev_save_fn save, dev_load_fn load,
                        void (*save_failed)(void *dev))
{
    vm_device_on_save(ctx, dev, version, save, load); /* vmm/snapshot.c */
    if (save_failed)
        vm_device_on_save_failed(ctx, dev, save_failed);
}

/* The one table of what devices may do; every device of this VM gets a pointer to it. */
static void services_init(struct vm *vm)
{
    vm->svc = (struct dev_services){
        .ctx = vm,
        .mem = &vm->mem,
        .add_device = svc_add_device,
        .on_quiesce = svc_on_quiesce,
        .map_range = svc_map_range,
        .irq_line = svc_irq_line,
        .msi_alloc = svc_msi_alloc,
        .msi_free = svc_msi_free,
        .msi_set = svc_msi_set,
        .msi_fire = svc_msi_fire,
        .ioeventfd_add = svc_ioeventfd_add,
        .ioeventfd_del = svc_ioeventfd_del,
        .request_stop = svc_request_stop,
        .request_reset = svc_request_reset,
        .thread_sandbox = svc_thread_sandbox,
        .log = svc_log,
        .on_save = svc_on_save,
    };
}

/* ---- configuration checks ---------------------------------------------------------- */

static int check_config(struct vm *vm, char *err, size_t errlen)
{
    const struct kvmbox_config *c = &vm->cfg;
    if ((!c->kernel || !*c->kernel) && !vm->firmware)
        return errf(err, errlen, -EINVAL, "no kernel given (--kernel PATH)");
    if (vm->firmware && !strcmp(vm->firmware, "uefi"))
        return errf(err, errlen, -ENOTSUP,
                    "--firmware uefi: OVMF needs an i440FX or Q35 chipset "
                    "(its host bridge and power management function), which kvmbox does not "
                    "emulate; see docs/firmware.md");
    if (c->kernel && *c->kernel && vm->firmware && c->firmware)
        return errf(err, errlen, -EINVAL,
                    "--kernel and --firmware exclude each other (a kernel "
                    "is booted directly, without firmware)");
    if (c->cpus == 0)
        return errf(err, errlen, -EINVAL, "--cpus must be at least 1");
    if (c->restore_path && c->restore_fd >= 0)
        return errf(err, errlen, -EINVAL, "restore_path and restore_fd exclude each other");
    if (c->mem_size < MIN_MEM)
        return errf(err, errlen, -EINVAL, "--mem must be at least 8M");
    struct sysinfo si;
    if (!c->mem_overcommit && sysinfo(&si) == 0) {
        uint64_t host = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
        if (c->mem_size > host) {
            char want[32], have[32];
            format_size(c->mem_size, want, sizeof(want));
            format_size(host, have, sizeof(have));
            return errf(err, errlen, -E2BIG,
                        "--mem %s is more than this host has (%s of RAM and "
                        "swap; ,overcommit=on allows it)",
                        want, have);
        }
    }
    return 0;
}

static int check_cpus(struct vm *vm, char *err, size_t errlen)
{
    unsigned max = vm->max_vcpus < VM_MAX_VCPUS ? vm->max_vcpus : VM_MAX_VCPUS;
    if (vm->cfg.cpus > max)
        return errf(err, errlen, -EINVAL, "--cpus %u is more than this host's KVM allows (%u)", vm->cfg.cpus,
                    max);
    vm->ncpus = vm->cfg.cpus;
    return 0;
}

/* ---- machine: what a reset rebuilds ----------------------------------------------- */

/* 64-bit BARs go above all RAM, 1 GiB aligned, in a 64 GiB window. */
#define MMIO64_SIZE (64ULL << 30)
static uint64_t mmio64_base(const struct vm *vm)
{
    uint64_t low = LAYOUT_MMIO_START, ram = vm->cfg.mem_size;
    uint64_t top = ram <= low ? LAYOUT_4G : LAYOUT_4G + (ram - low);
    return (top + (1ULL << 30) - 1) & ~((1ULL << 30) - 1);
}

void vm_acpi_config(const struct vm *vm, struct acpi_config *ac)
{
    *ac = (struct acpi_config){
        .ncpus = vm->ncpus,
        .lapic_addr = LAYOUT_LAPIC,
        .ioapic_addr = LAYOUT_IOAPIC,
        .ioapic_id = 0,
        .ioapic_gsi_base = 0,
        .pm1a_evt_port = PORT_PM1A_EVT,
        .pm1a_cnt_port = PORT_PM1A_CNT,
        .pm_tmr_port = PORT_PM_TMR,
        .sci_irq = IRQ_SCI,
        .reset_port = PORT_RESET,
        .reset_value = 0x06,
        .s5_slp_typ = ACPI_SLP_TYP_S5,
        .pvpanic_port = PORT_PVPANIC,
        .com1_port = PORT_COM1,
        .com1_irq = IRQ_COM1,
        .have_pci = true,
        .ecam_base = LAYOUT_ECAM_BASE,
        .ecam_end_bus = 0,
        .pci_mmio_start = (uint32_t)LAYOUT_PCI_MMIO_START,
        .pci_mmio_end = (uint32_t)LAYOUT_PCI_MMIO_END,
        .pci_mmio64_start = mmio64_base(vm),
        .pci_mmio64_end = mmio64_base(vm) + MMIO64_SIZE,
    };
    if (vm->fw.size) {
        /* Firmware places 32-bit BARs itself, top down from the I/O APIC (SeaBIOS does so on
         * a host bridge it does not know): the window is everything from the end of the ECAM
         * window to there. */
        ac->pci_mmio_start = (uint32_t)(LAYOUT_ECAM_BASE + LAYOUT_ECAM_SIZE);
        ac->pci_mmio_end = (uint32_t)LAYOUT_IOAPIC;
    }
}

static int load_firmware_and_kernel(struct vm *vm, char *err, size_t errlen)
{
    if (vm->fw.size) {
        int r = fw_image_install(&vm->fw, &vm->mem);
        return r < 0 ? errf(err, errlen, r, "no RAM below 1 MiB for the BIOS") : 0;
    }
    struct e820_entry map[MAX_E820];
    int n = e820_build(vm->mem.ram_size, map, MAX_E820);
    if (n < 0)
        return errf(err, errlen, n, "cannot build the memory map");
    struct acpi_config ac;
    vm_acpi_config(vm, &ac);
    uint8_t *tables = gm_ptr(&vm->mem, LAYOUT_ACPI_BASE, LAYOUT_ACPI_SIZE);
    if (!tables)
        return errf(err, errlen, -EFAULT, "no RAM for the ACPI tables");
    int used = acpi_build(&ac, tables, LAYOUT_ACPI_SIZE, LAYOUT_ACPI_BASE);
    if (used < 0)
        return errf(err, errlen, used, "cannot build the ACPI tables: %s", strerror(-used));
    trace_mark("e820 and ACPI tables");
    struct boot_request req = {
        .gm = &vm->mem,
        .kernel_path = vm->kernel,
        .initrd_path = vm->initrd,
        .cmdline = vm->cmdline,
        .rsdp_gpa = LAYOUT_ACPI_BASE,
        .e820 = map,
        .ne820 = n,
    };
    int r = boot_load(&req, &vm->boot, err, errlen);
    if (r < 0) {
        vm->config_error = r != -ENOMEM;
        return r;
    }
    trace_mark("kernel loaded");
    r = vcpu_prepare_boot_tables(vm);
    trace_mark("boot page tables");
    return r < 0 ? errf(err, errlen, r, "cannot write the boot page tables") : 0;
}

/* The vCPU threads (started already) create their vCPUs as soon as the irqchip exists, and
 * the first one the PIT, while this thread sets the interrupt routing and loads the kernel
 * (vmm/vcpu.c); on failure the caller's teardown stops them. */
static int machine_build(struct vm *vm, char *err, size_t errlen)
{
    int r = vm->vcpus_launched ? 0 : vcpus_launch(vm, err, errlen);
    if (r < 0)
        return r;
    /* irq_lock: no device injects an interrupt while vm_fd changes and the routes are set. */
    pthread_rwlock_wrlock(&vm->irq_lock);
    r = kvm_create_machine(vm, err, errlen);
    if (r == 0) {
        vcpus_allow_create(vm); /* vCPU 0's thread also creates the PIT */
        r = kvm_attach_irqs(vm, err, errlen);
    }
    pthread_rwlock_unlock(&vm->irq_lock);
    /* A restored VM's RAM already holds its kernel (and everything else). */
    if (r < 0 || (!vm->restore && (r = load_firmware_and_kernel(vm, err, errlen)) < 0))
        return r;
    r = vcpus_wait_created(vm, err, errlen);
    trace_mark("vCPUs created");
    return r;
}

static void machine_teardown(struct vm *vm)
{
    vcpus_destroy(vm);
    pthread_rwlock_wrlock(&vm->irq_lock);
    kvm_destroy_machine(vm);
    pthread_rwlock_unlock(&vm->irq_lock);
}

/* ---- devices: live for the whole run ------------------------------------------------ */

/* The device table: one row per device or family, created in this order. The PC devices
 * first, then the PCI host, whose slots the PCI devices take in table order (disks, CD-ROMs,
 * NICs, balloon: the slots `kvmbox info` shows); fw_cfg last, as its boot order names those
 * slots. Every device registers itself with the VM (svc.add_device) as it is created, so a
 * failing row is unwound with all the rows before it, in reverse order (devices_destroy). */
struct device_row {
    const char *what;
    /* 0, or a negative errno (ERR may say why; else "cannot create the WHAT device"). */
    int (*create)(struct vm *vm, char *err, size_t errlen);
    bool config; /* its failures (but -ENOMEM) are the configuration's fault */
};

static int make_com1(struct vm *vm, char *err, size_t errlen)
{
    return serial_create(&vm->svc, PORT_COM1, IRQ_COM1, vm_console_output, vm, &vm->com1);
}

static int make_rtc(struct vm *vm, char *err, size_t errlen)
{
    return rtc_create(&vm->svc);
}

static int make_i8042(struct vm *vm, char *err, size_t errlen)
{
    return i8042_create(&vm->svc);
}

static int make_pm(struct vm *vm, char *err, size_t errlen)
{
    return pm_create(&vm->svc, &vm->pm);
}

static int make_debug_exit(struct vm *vm, char *err, size_t errlen)
{
    return debug_exit_create(&vm->svc);
}

static int make_pvpanic(struct vm *vm, char *err, size_t errlen)
{
    return pvpanic_create(&vm->svc);
}

static int make_post(struct vm *vm, char *err, size_t errlen)
{
    return post_create(&vm->svc);
}

static int make_pci_host(struct vm *vm, char *err, size_t errlen)
{
    return pci_host_create(&vm->svc, mmio64_base(vm), MMIO64_SIZE, &vm->pci);
}

static int make_disks(struct vm *vm, char *err, size_t errlen)
{
    int r = 0;
    for (unsigned i = 0; r == 0 && i < vm->cfg.ndisks; i++)
        r = vblk_create(&vm->svc, vm->pci, &vm->cfg.disks[i], i, &vm->disk_info[i], err, errlen);
    return r;
}

static int make_cdroms(struct vm *vm, char *err, size_t errlen)
{
    int r = 0;
    for (unsigned i = 0; r == 0 && i < vm->cfg.ncdroms; i++)
        r = vscsi_create(&vm->svc, vm->pci, &vm->cfg.cdroms[i], i, &vm->cdrom_info[i], err, errlen);
    return r;
}

static int make_nics(struct vm *vm, char *err, size_t errlen)
{
    const struct vnet_env env = { .vm_name = vm->name,
                                  .runtime_dir = vm->cfg.runtime_dir,
                                  .sandbox = !vm->cfg.no_sandbox };
    int r = 0;
    for (unsigned i = 0; r == 0 && i < vm->cfg.nnics; i++)
        r = vnet_create(&vm->svc, vm->pci, &vm->cfg.nics[i], i, &env, &vm->nic_info[i], err, errlen);
    return r;
}

static int make_balloon(struct vm *vm, char *err, size_t errlen)
{
    return vm->cfg.no_balloon ? 0 : vballoon_create(&vm->svc, vm->pci, &vm->balloon, err, errlen);
}

static int make_fw_cfg(struct vm *vm, char *err, size_t errlen)
{
    return vm->fw.size ? fw_setup(vm, err, errlen) : 0;
}

static const struct device_row device_table[] = {
    { "serial (COM1)", make_com1, false },
    { "CMOS RTC", make_rtc, false },
    { "i8042", make_i8042, false },
    { "ACPI PM", make_pm, false },
    { "debug-exit", make_debug_exit, false },
    { "pvpanic", make_pvpanic, false },
    { "POST port", make_post, false },
    { "PCI host", make_pci_host, false },
    { "disk", make_disks, true },
    { "CD-ROM", make_cdroms, true },
    { "NIC", make_nics, true },
    { "balloon", make_balloon, false },
    { "fw_cfg", make_fw_cfg, false },
};

static void devices_destroy(struct vm *vm);

static int devices_create(struct vm *vm, char *err, size_t errlen)
{
    bus_init(&vm->pio, "pio");
    bus_init(&vm->mmio, "mmio");
    for (size_t i = 0; i < ARRAY_SIZE(device_table); i++) {
        const struct device_row *row = &device_table[i];
        err[0] = 0;
        int r = row->create(vm, err, errlen);
        if (r == 0)
            continue;
        if (!err[0])
            errf(err, errlen, r, "cannot create the %s device: %s", row->what, strerror(-r));
        vm->config_error = row->config && r != -ENOMEM;
        devices_destroy(vm); /* this row's devices and every one before, in reverse order */
        return r;
    }
    return 0;
}

static void devices_quiesce(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ndevices; i++)
        if (vm->devices[i].quiesce)
            vm->devices[i].quiesce(vm->devices[i].dev);
}

static void devices_reset(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ndevices; i++)
        if (vm->devices[i].reset)
            vm->devices[i].reset(vm->devices[i].dev);
}

static void devices_destroy(struct vm *vm)
{
    while (vm->ndevices) {
        struct vm_device *d = &vm->devices[--vm->ndevices];
        if (d->destroy)
            d->destroy(d->dev);
    }
    /* Nothing may reach a destroyed device through the VM's shortcuts to them. */
    vm->com1 = NULL, vm->pm = NULL, vm->pci = NULL, vm->balloon = NULL, vm->fw_cfg = NULL;
    for (unsigned i = 0; i < KVMBOX_MAX_DISKS; i++)
        vm->disk_info[i].dev = NULL;
    for (unsigned i = 0; i < KVMBOX_MAX_NICS; i++)
        vm->nic_info[i].dev = NULL;
}

/* ---- public API ----------------------------------------------------------------------- */

static char *dup_or_null(const char *s, int *fail)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *fail = 1;
    return d;
}

/* PATH made absolute against the working directory, symlinks left as they are. */
static char *abs_path(const char *path, int *fail)
{
    char cwd[4096];
    if (!path || path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
        return dup_or_null(path, fail);
    char *p;
    if (asprintf(&p, "%s/%s", cwd, path) < 0) {
        *fail = 1;
        return NULL;
    }
    return p;
}

static int vm_init_state(struct vm *vm, const struct kvmbox_config *cfg)
{
    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = -1;
    vm->cfg = *cfg;
    services_init(vm);
    int fail = 0;
    vm->kernel = dup_or_null(cfg->kernel, &fail);
    vm->initrd = dup_or_null(cfg->initrd, &fail);
    vm->cmdline = dup_or_null(cfg->cmdline ? cfg->cmdline : "", &fail);
    vm->name = dup_or_null(cfg->name ? cfg->name : "vm", &fail);
    vm->api_sock = dup_or_null(cfg->api_sock, &fail);
    vm->config_json = dup_or_null(cfg->config_json, &fail);
    /* No kernel means firmware boot: SeaBIOS unless another image is named. */
    if (cfg->firmware && strcmp(cfg->firmware, "bios"))
        vm->firmware = dup_or_null(cfg->firmware, &fail);
    else if (cfg->firmware || !cfg->kernel || !*cfg->kernel)
        vm->firmware = dup_or_null(FW_DEFAULT_BIOS, &fail);
    vm->cfg.firmware = vm->firmware;
    vm->cfg.kernel = vm->kernel, vm->cfg.initrd = vm->initrd, vm->cfg.cmdline = vm->cmdline;
    vm->cfg.name = vm->name, vm->cfg.api_sock = vm->api_sock, vm->cfg.config_json = vm->config_json;
    if (cfg->ndisks > KVMBOX_MAX_DISKS)
        return -EINVAL;
    for (unsigned i = 0; i < cfg->ndisks; i++) {
        struct kvmbox_disk *d = &vm->cfg.disks[i];
        /* Absolute, so `kvmbox info` names the file whatever the reader's directory - but
         * not through realpath: a relative backing name is resolved against the directory
         * of the path as given, a symlink's and not its target's (QEMU's rule, and img's). */
        d->path = vm->disk_strs[i][0] = abs_path(cfg->disks[i].path, &fail);
        d->format = vm->disk_strs[i][1] = dup_or_null(cfg->disks[i].format, &fail);
        d->serial = vm->disk_strs[i][2] = dup_or_null(cfg->disks[i].serial, &fail);
        d->backing = vm->disk_strs[i][3] = abs_path(cfg->disks[i].backing, &fail);
        d->backing_format = vm->disk_strs[i][4] = dup_or_null(cfg->disks[i].backing_format, &fail);
    }
    if (cfg->ncdroms > KVMBOX_MAX_CDROMS)
        return -EINVAL;
    for (unsigned i = 0; i < cfg->ncdroms; i++) {
        char *abs = cfg->cdroms[i].path ? realpath(cfg->cdroms[i].path, NULL) : NULL;
        vm->cfg.cdroms[i].path = vm->cdrom_strs[i] = abs ? abs : dup_or_null(cfg->cdroms[i].path, &fail);
    }
    if (cfg->nnics > KVMBOX_MAX_NICS)
        return -EINVAL;
    for (unsigned i = 0; i < cfg->nnics; i++) {
        struct kvmbox_nic *n = &vm->cfg.nics[i];
        if (n->nhostfwd > KVMBOX_MAX_HOSTFWD)
            return -EINVAL;
        n->name = vm->nic_strs[i][0] = dup_or_null(cfg->nics[i].name, &fail);
        for (unsigned j = 0; j < n->nhostfwd; j++)
            n->hostfwd[j] = vm->nic_strs[i][1 + j] = dup_or_null(cfg->nics[i].hostfwd[j], &fail);
    }
    vm->cfg.runtime_dir = vm->runtime_dir = dup_or_null(cfg->runtime_dir, &fail);
    vm->out_event_fd = -1;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cond, NULL);
    pthread_cond_init(&vm->pause_cond, NULL);
    pthread_cond_init(&vm->vcpu_cond, NULL);
    pthread_mutex_init(&vm->cpuid_lock, NULL);
    pthread_mutex_init(&vm->out_lock, NULL);
    pthread_rwlock_init(&vm->irq_lock, NULL);
    irq_init(&vm->irq);
    vm->out_event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->out_event_fd < 0 || ring_init(&vm->out_ring, CONSOLE_RING_SIZE) < 0)
        fail = 1;
    vm->start_ns = monotonic_ns();
    return fail ? -ENOMEM : 0;
}

static void vm_free_state(struct vm *vm)
{
    free(vm->kernel), free(vm->initrd), free(vm->cmdline);
    free(vm->name), free(vm->api_sock), free(vm->config_json), free(vm->firmware);
    fw_image_free(&vm->fw);
    for (unsigned i = 0; i < KVMBOX_MAX_DISKS; i++)
        for (unsigned j = 0; j < 5; j++)
            free(vm->disk_strs[i][j]);
    for (unsigned i = 0; i < KVMBOX_MAX_CDROMS; i++)
        free(vm->cdrom_strs[i]);
    for (unsigned i = 0; i < KVMBOX_MAX_NICS; i++)
        for (unsigned j = 0; j < 1 + KVMBOX_MAX_HOSTFWD; j++)
            free(vm->nic_strs[i][j]);
    free(vm->runtime_dir);
    free(vm->vcpus);
    ring_free(&vm->out_ring);
    if (vm->out_event_fd >= 0)
        close(vm->out_event_fd);
    pthread_mutex_destroy(&vm->lock);
    pthread_cond_destroy(&vm->cond);
    pthread_cond_destroy(&vm->pause_cond);
    pthread_cond_destroy(&vm->vcpu_cond);
    pthread_mutex_destroy(&vm->cpuid_lock);
    pthread_mutex_destroy(&vm->out_lock);
    pthread_rwlock_destroy(&vm->irq_lock);
    irq_destroy(&vm->irq);
}

void kvmbox_config_init(struct kvmbox_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mem_size = 256ULL << 20;
    cfg->cpus = 1;
    cfg->console_in = -1;
    cfg->console_out = -1;
    cfg->restore_fd = -1;
}

const char *kvmbox_version(void)
{
    return KVMBOX_VERSION;
}

static void set_result(struct kvmbox_result *res, int err, const char *msg)
{
    if (!res)
        return;
    memset(res, 0, sizeof(*res));
    res->reason = KVMBOX_STOP_ERROR;
    res->error = err;
    snprintf(res->message, sizeof(res->message), "%s", msg);
}

/* ---- construction: the ordered table ------------------------------------------------ */

static int stage_config(struct vm *vm, char *err, size_t errlen)
{
    int r = check_config(vm, err, errlen);
    if (r == 0 && (vm->cfg.restore_path || vm->cfg.restore_fd >= 0))
        r = vm_restore_open(vm, err, errlen); /* the state file, checked before anything */
    if (r == 0 && vm->firmware)
        r = fw_image_load(vm->firmware, &vm->fw, err, errlen);
    if (r == 0 && vm->restore)
        r = vm_restore_firmware(vm, err, errlen); /* vmm/snapshot.c */
    vm->config_error = r < 0 && r != -ENOMEM;
    return r;
}

static int stage_kvm(struct vm *vm, char *err, size_t errlen)
{
    int r = kvm_open_host(vm, err, errlen);
    if (r < 0)
        return r;
    irq_probe(vm);
    if ((r = check_cpus(vm, err, errlen)) < 0)
        vm->config_error = true;
    return r;
}

/* The vCPU threads start now: while this thread maps RAM and creates the devices, they get
 * going and fetch the supported CPUID (vmm/vcpu.c). */
static int stage_vcpus(struct vm *vm, char *err, size_t errlen)
{
    return vcpus_launch(vm, err, errlen);
}

static void unstage_vcpus(struct vm *vm)
{
    if (vm->vcpus)
        vcpus_stop(vm);
}

static int stage_ram(struct vm *vm, char *err, size_t errlen)
{
    const struct kvmbox_config *c = &vm->cfg;
    char note[256] = "";
    int r = gm_init(&vm->mem, c->mem_size, c->hugepages, note, sizeof(note), err, errlen);
    if (r < 0 && !err[0])
        snprintf(err, errlen, "cannot map %llu MiB of guest memory: %s",
                 (unsigned long long)(c->mem_size >> 20), strerror(-r));
    if (r == 0 && note[0])
        dev_log(&vm->svc, "note: %s", note);
    if (r < 0 && c->hugepages)
        vm->config_error = true;
    if (r == 0 && vm->restore && (r = vm_restore_ram(vm, err, errlen)) < 0)
        vm->config_error = true;
    return r;
}

static void unstage_ram(struct vm *vm)
{
    gm_destroy(&vm->mem);
}

static int stage_api(struct vm *vm, char *err, size_t errlen)
{
    /* The VM is the first member of the kvmbox_vm the API serves (vm.h): same address. */
    struct kvmbox_vm *k = (struct kvmbox_vm *)(void *)vm;
    int r = vm->api_sock ? api_start(k, vm->api_sock, &vm->api, err, errlen) : 0;
    if (r < 0)
        vm->config_error = r == -EADDRINUSE || r == -EEXIST || r == -ENAMETOOLONG;
    return r;
}

static void unstage_api(struct vm *vm)
{
    api_stop(vm->api);
    vm->api = NULL;
}

/* The machine, then (restoring) the saved state put into it. */
static int stage_machine(struct vm *vm, char *err, size_t errlen)
{
    int r = machine_build(vm, err, errlen);
    if (r == 0 && vm->restore && (r = vm_restore_apply(vm, err, errlen)) < 0)
        vm->config_error = r != -ENOMEM && r != -EIO;
    return r;
}

/* kvmbox_vm_create runs these in order and stops at the first failure; the VM is then
 * unwound from that stage (which undoes its own partial work) back to the first. Each undo
 * is safe on a stage that did nothing. A guest reset rebuilds only the last stage. */
static const struct vm_stage {
    const char *done, *undone; /* trace marks (docs/benchmarks.md), NULL: none */
    int (*build)(struct vm *vm, char *err, size_t errlen);
    void (*undo)(struct vm *vm);
} vm_stages[] = {
    { "configuration checked", NULL, stage_config, NULL }, /* vm_free_state frees the image */
    { "/dev/kvm opened", NULL, stage_kvm, kvm_close_host },
    { NULL, NULL, stage_vcpus, unstage_vcpus },
    { "guest RAM mapped", NULL, stage_ram, unstage_ram },
    { "devices created", "devices destroyed", devices_create, devices_destroy },
    { "control socket", NULL, stage_api, unstage_api },
    { NULL, "KVM VM closed", stage_machine, machine_teardown },
};

/* Undoes the first N stages, last first. */
static void vm_unwind(struct vm *vm, unsigned n)
{
    while (n--) {
        if (vm_stages[n].undo)
            vm_stages[n].undo(vm);
        if (vm_stages[n].undone)
            trace_mark(vm_stages[n].undone);
    }
}

int kvmbox_vm_create(const struct kvmbox_config *cfg, struct kvmbox_vm **out, struct kvmbox_result *res)
{
    char err[KVMBOX_MSG_MAX] = "";
    *out = NULL;
    struct kvmbox_vm *k = calloc(1, sizeof(*k));
    if (!k) {
        set_result(res, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    struct vm *vm = &k->vm;
    trace_mark("create");
    int r = vm_init_state(vm, cfg);
    if (r < 0)
        snprintf(err, sizeof(err), "out of memory");
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(vm_stages); i++) {
        vm->stages_built = (unsigned)i + 1; /* a failing stage is undone too */
        r = vm_stages[i].build(vm, err, sizeof(err));
        if (vm_stages[i].done)
            trace_mark(vm_stages[i].done);
    }
    if (r < 0) {
        set_result(res, r, err);
        if (res)
            res->config_error = vm->config_error;
        kvmbox_vm_destroy(k);
        return r;
    }
    *out = k;
    return 0;
}

static bool wait_for_event(struct vm *vm, const struct timespec *deadline)
{
    bool timed_out = false;
    pthread_mutex_lock(&vm->lock);
    while (!vm->stop_requested && !vm->reset_requested && !timed_out && !vm->save_req && !vm->snap_req) {
        if (deadline)
            timed_out = pthread_cond_timedwait(&vm->cond, &vm->lock, deadline) == ETIMEDOUT;
        else
            pthread_cond_wait(&vm->cond, &vm->lock);
    }
    pthread_mutex_unlock(&vm->lock);
    return timed_out;
}

/* Guest reset: a fresh KVM VM with zeroed RAM, reset devices and a freshly loaded kernel. */
static int vm_reboot(struct vm *vm, char *err, size_t errlen)
{
    /* This reset is being served: clear it now, so that a reset asked for while the machine
     * is rebuilt (the API's `reset` right after a reboot) is kept and served next. */
    __atomic_store_n(&vm->reset_requested, false, __ATOMIC_SEQ_CST);
    machine_teardown(vm);
    devices_reset(vm);
    gm_discard_all(&vm->mem);
    int r = vm_restore_ram_release(vm);
    if (r < 0)
        return errf(err, errlen, r, "cannot replace the restored RAM: %s", strerror(-r));
    r = fw_setup_reboot(vm);
    if (r < 0)
        return errf(err, errlen, r, "cannot update the boot order: %s", strerror(-r));
    r = machine_build(vm, err, errlen);
    if (r == 0)
        vcpus_go(vm);
    return r;
}

int kvmbox_vm_run(struct kvmbox_vm *k, struct kvmbox_result *res)
{
    struct vm *vm = &k->vm;
    char err[KVMBOX_MSG_MAX] = "";
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += vm->cfg.timeout_secs;
    int r = 0;
    if (vm->cfg.console_in >= 0)
        r = console_start(vm, vm->cfg.console_in, vm->cfg.console_escape, vm->com1, &vm->console);
    if (r < 0)
        snprintf(err, sizeof(err), "cannot start the console thread: %s", strerror(-r));
    trace_mark("console thread started");
    if (r == 0)
        vcpus_go(vm);
    while (r == 0) {
        if (wait_for_event(vm, vm->cfg.timeout_secs ? &deadline : NULL))
            vm_request_stop(vm, KVMBOX_STOP_TIMEOUT, 0, "timeout: the guest ran for %u s",
                            vm->cfg.timeout_secs);
        if (vm_save_serve(vm))
            continue; /* saved (the VM is stopping now) or failed (it runs on) */
        if (vm_snapshot_serve(vm))
            continue; /* vmm/vm_snapshot.c: the VM runs on */
        vcpus_stop(vm);
        if (vm->stop_requested)
            break;
        /* The firmware said nothing is bootable and, after its retry wait, reset the machine:
         * end here rather than retry for ever. */
        if (__atomic_load_n(&vm->no_boot_seen, __ATOMIC_SEQ_CST)) {
            vm_request_stop(vm, KVMBOX_STOP_NO_BOOT, 0,
                            "no bootable device: the firmware found "
                            "nothing to boot on the disks and CD-ROMs");
            break;
        }
        if (vm->cfg.no_reboot) {
            vm_request_stop(vm, KVMBOX_STOP_RESET, 0, "guest reset (--no-reboot)");
            break;
        }
        __atomic_fetch_add(&vm->reboots, 1, __ATOMIC_RELAXED); /* the API reads it */
        r = vm_reboot(vm, err, sizeof(err));
    }
    trace_mark("vCPU threads joined");
    vm_save_cancel(vm);
    vm_snapshot_cancel(vm);
    console_stop(vm->console);
    vm->console = NULL;
    if (r < 0)
        vm_request_stop(vm, KVMBOX_STOP_ERROR, 0, "%s", err);
    if (vm->vcpus)
        vcpus_stop(vm);
    trace_mark("console thread joined");
    devices_quiesce(vm);
    if (vm->cfg.on_end) {
        struct kvmbox_result end = vm->result;
        if (r < 0)
            set_result(&end, r, err);
        vm->cfg.on_end(&end, vm->cfg.on_end_opaque);
    }
    api_stop(vm->api); /* answers "wait" requests with the result */
    vm->api = NULL;
    trace_mark("control socket closed");
    if (r < 0) {
        vcpus_stop(vm);
        set_result(res, r, err);
        return r;
    }
    if (res)
        *res = vm->result;
    return 0;
}

int kvmbox_vm_set_link(struct kvmbox_vm *k, unsigned nic, bool up)
{
    if (nic >= k->vm.cfg.nnics || !k->vm.nic_info[nic].dev)
        return -ENODEV;
    vnet_set_link(k->vm.nic_info[nic].dev, up);
    return 0;
}

int kvmbox_vm_pause(struct kvmbox_vm *k)
{
    return vm_pause(&k->vm);
}

int kvmbox_vm_resume(struct kvmbox_vm *k)
{
    return vm_resume(&k->vm);
}

int kvmbox_vm_save(struct kvmbox_vm *k, const char *path, char *err, size_t errlen)
{
    if (!path || path[0] != '/')
        return errf(err, errlen, -EINVAL, "the save file must be an absolute path");
    return vm_save_request(&k->vm, path, -1, err, errlen); /* vmm/snapshot.c */
}

int kvmbox_vm_save_fd(struct kvmbox_vm *k, int fd, char *err, size_t errlen)
{
    if (fd < 0)
        return errf(err, errlen, -EBADF, "no file descriptor to save to");
    return vm_save_request(&k->vm, NULL, fd, err, errlen);
}

int kvmbox_vm_clone(const struct kvmbox_config *saved, const char *name, struct kvmbox_vm **out,
                    struct kvmbox_result *res)
{
    if (!saved->restore_path && saved->restore_fd < 0) {
        set_result(res, -EINVAL, "a clone is restored: set restore_path or restore_fd");
        if (res)
            res->config_error = true;
        return -EINVAL;
    }
    if (!name || !*name) {
        set_result(res, -EINVAL, "a clone needs a name of its own");
        if (res)
            res->config_error = true;
        return -EINVAL;
    }
    /* Its own name, and each NIC's MAC derived from it: the virtio-net device tells the
     * restored driver its new address (virtio/net.c). The saved definition and control
     * socket are the original's, not the clone's. */
    struct kvmbox_config c = *saved;
    c.name = name;
    for (unsigned i = 0; i < c.nnics && i < KVMBOX_MAX_NICS; i++)
        c.nics[i].have_mac = false;
    c.config_json = NULL;
    c.api_sock = NULL;
    return kvmbox_vm_create(&c, out, res);
}

void kvmbox_vm_power_button(struct kvmbox_vm *k)
{
    pm_power_button(k->vm.pm);
}

void kvmbox_vm_reset(struct kvmbox_vm *k)
{
    vm_request_reset(&k->vm);
}

void kvmbox_vm_stop(struct kvmbox_vm *k, enum kvmbox_stop reason)
{
    vm_request_stop(&k->vm, reason, 0, "stopped by request");
}

void kvmbox_vm_destroy(struct kvmbox_vm *k)
{
    if (!k)
        return;
    struct vm *vm = &k->vm;
    /* The threads that act on the machine stop first (vCPUs, console, control socket), so
     * nothing uses what the unwinding releases. */
    if (vm->vcpus)
        vcpus_stop(vm);
    console_stop(vm->console);
    vm->console = NULL;
    api_stop(vm->api);
    vm->api = NULL;
    trace_mark("destroy");
    vm_unwind(vm, vm->stages_built);
    vm_restore_free(vm);
    vm_free_state(vm);
    free(k);
    trace_mark("destroyed");
}

int kvmbox_exit_status(const struct kvmbox_result *res)
{
    switch (res->reason) {
    case KVMBOX_STOP_POWEROFF:
    case KVMBOX_STOP_RESET:
    case KVMBOX_STOP_DETACH: return KVMBOX_EXIT_POWEROFF;
    case KVMBOX_STOP_DEBUG_EXIT: return (int)(((res->debug_code << 1) | 1) & 0xff);
    case KVMBOX_STOP_PANIC: return KVMBOX_EXIT_PANIC;
    case KVMBOX_STOP_TIMEOUT: return KVMBOX_EXIT_TIMEOUT;
    case KVMBOX_STOP_KILLED: return KVMBOX_EXIT_KILLED;
    case KVMBOX_STOP_NO_BOOT: return KVMBOX_EXIT_NO_BOOT;
    case KVMBOX_STOP_ERROR:
    default: return KVMBOX_EXIT_FAILURE;
    }
}

int kvmbox_run_config(const struct kvmbox_config *cfg, struct kvmbox_result *res)
{
    struct kvmbox_vm *vm;
    int r = kvmbox_vm_create(cfg, &vm, res);
    if (r < 0)
        return res && res->config_error ? KVMBOX_EXIT_USAGE : KVMBOX_EXIT_FAILURE;
    r = kvmbox_vm_run(vm, res);
    kvmbox_vm_destroy(vm);
    return r < 0 ? KVMBOX_EXIT_FAILURE : kvmbox_exit_status(res);
}
