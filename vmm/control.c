/* The library's control calls (include/kvmbox.h, "Watching and steering a VM"): what the
 * control socket and embedders use to read a running VM's state and steer it. Each takes the
 * lock that guards what it reads, or reads it atomically; none keeps a lock across a call
 * into a device. */
#include "vmm/control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices/devices.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "common/util.h"
#include "vmm/vm.h"

#define BALLOON_MAX_STATS_INTERVAL 86400

/* ---- state -------------------------------------------------------------------------- */

int kvmbox_vm_status(struct kvmbox_vm *k, struct kvmbox_status *st)
{
    struct vm *vm = &k->vm;
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&vm->lock);
    st->state = vm->stop_requested    ? KVMBOX_STATE_STOPPING
                : vm->reset_requested ? KVMBOX_STATE_REBOOTING
                : vm->paused          ? KVMBOX_STATE_PAUSED
                                      : KVMBOX_STATE_RUNNING;
    pthread_mutex_unlock(&vm->lock);
    st->uptime_ns = monotonic_ns() - vm->start_ns;
    /* The main thread counts reboots while this runs on another. */
    st->reboots = __atomic_load_n(&vm->reboots, __ATOMIC_RELAXED);
    st->cpus = vm->ncpus;
    st->mem_size = vm->mem.ram_size;
    st->hugepages = vm->mem.huge ? vm->mem.huge : "off";
    return 0;
}

const struct kvmbox_config *kvmbox_vm_config(struct kvmbox_vm *k)
{
    return &k->vm.cfg; /* set at creation, never changed after */
}

int kvmbox_vm_result(struct kvmbox_vm *k, struct kvmbox_result *res)
{
    struct vm *vm = &k->vm;
    pthread_mutex_lock(&vm->lock);
    int r = vm->stop_requested ? 0 : -EBUSY;
    if (r == 0)
        *res = vm->result;
    pthread_mutex_unlock(&vm->lock);
    return r;
}

/* ---- devices ------------------------------------------------------------------------ */

int kvmbox_vm_disk_status(struct kvmbox_vm *k, unsigned disk, struct kvmbox_disk_status *st)
{
    struct vm *vm = &k->vm;
    if (disk >= vm->cfg.ndisks)
        return -ENODEV;
    memset(st, 0, sizeof(*st));
    snprintf(st->format, sizeof(st->format), "%s", vm->disk_info[disk].format);
    st->pci_slot = vm->disk_info[disk].slot;
    st->size = vm->disk_info[disk].size;
    struct vblk_state bs = { 0 };
    if (vm->disk_info[disk].dev)
        vblk_get_state(vm->disk_info[disk].dev, &bs);
    st->corrupt = bs.corrupt;
    st->io_errors = bs.io_errors;
    return 0;
}

int kvmbox_vm_cdrom_status(struct kvmbox_vm *k, unsigned cdrom, struct kvmbox_cdrom_status *st)
{
    struct vm *vm = &k->vm;
    if (cdrom >= vm->cfg.ncdroms)
        return -ENODEV;
    st->pci_slot = vm->cdrom_info[cdrom].slot;
    st->size = vm->cdrom_info[cdrom].size;
    return 0;
}

int kvmbox_vm_nic_status(struct kvmbox_vm *k, unsigned nic, struct kvmbox_nic_status *st)
{
    struct vm *vm = &k->vm;
    if (nic >= vm->cfg.nnics || !vm->nic_info[nic].dev)
        return -ENODEV;
    memset(st, 0, sizeof(*st));
    memcpy(st->mac, vm->nic_info[nic].mac, sizeof(st->mac));
    st->pci_slot = vm->nic_info[nic].slot;
    snprintf(st->backend, sizeof(st->backend), "%s", vm->nic_info[nic].desc);
    struct vnet_stats ns;
    vnet_get_stats(vm->nic_info[nic].dev, &ns);
    st->link_up = ns.link_up;
    st->rx_frames = ns.rx_frames, st->rx_bytes = ns.rx_bytes, st->rx_dropped = ns.rx_dropped;
    st->tx_frames = ns.tx_frames, st->tx_bytes = ns.tx_bytes, st->tx_dropped = ns.tx_dropped;
    return 0;
}

int kvmbox_vm_balloon_status(struct kvmbox_vm *k, struct kvmbox_balloon_status *st)
{
    if (!k->vm.balloon)
        return -ENODEV;
    struct balloon_info b;
    vballoon_get_info(k->vm.balloon, &b);
    *st = (struct kvmbox_balloon_status){
        .target = b.target,
        .actual = b.actual,
        .released = b.released,
        .reported = b.reported,
        .stats_interval = b.stats_interval,
        .free_page_reporting = b.reporting,
        .stats_age_ms = b.stats.age_ms,
        .swap_in = b.stats.swap_in,
        .swap_out = b.stats.swap_out,
        .major_faults = b.stats.major_faults,
        .minor_faults = b.stats.minor_faults,
        .free = b.stats.free,
        .total = b.stats.total,
        .available = b.stats.available,
        .caches = b.stats.caches,
    };
    return 0;
}

int kvmbox_vm_set_balloon_target(struct kvmbox_vm *k, uint64_t bytes, char *msg, size_t msglen)
{
    char err[256] = "";
    int r = k->vm.balloon ? vballoon_set_target(k->vm.balloon, bytes, err, sizeof(err)) : -ENODEV;
    if (r == -ENODEV)
        snprintf(err, sizeof(err), "this VM has no balloon device");
    if (r < 0 && msg && msglen)
        snprintf(msg, msglen, "%s", err);
    return r;
}

int kvmbox_vm_set_balloon_stats_interval(struct kvmbox_vm *k, unsigned secs)
{
    if (!k->vm.balloon)
        return -ENODEV;
    if (secs > BALLOON_MAX_STATS_INTERVAL)
        return -EINVAL;
    vballoon_set_stats_interval(k->vm.balloon, secs);
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

void kvmbox_vm_reboot(struct kvmbox_vm *k)
{
    /* vm_request_stop turns the poweroff the button leads to into a reset. */
    __atomic_store_n(&k->vm.reboot_on_poweroff, true, __ATOMIC_SEQ_CST);
    pm_power_button(k->vm.pm);
}

void kvmbox_vm_stop_with(struct kvmbox_vm *k, enum kvmbox_stop reason, const char *message)
{
    vm_request_stop(&k->vm, reason, 0, "%s", message ? message : "stopped by request");
}

void control_api_thread_sandbox(struct kvmbox_vm *k)
{
    vm_thread_sandbox(&k->vm, SANDBOX_API);
}

/* ---- console ------------------------------------------------------------------------ */

int kvmbox_vm_console_fd(struct kvmbox_vm *k)
{
    return k->vm.out_event_fd;
}

void kvmbox_vm_console_attach(struct kvmbox_vm *k)
{
    /* Under out_lock: output put in the ring before this is there for the reader's next
     * read, output after it writes the eventfd. */
    pthread_mutex_lock(&k->vm.out_lock);
    k->vm.console_listeners++;
    pthread_mutex_unlock(&k->vm.out_lock);
}

void kvmbox_vm_console_detach(struct kvmbox_vm *k)
{
    pthread_mutex_lock(&k->vm.out_lock);
    if (k->vm.console_listeners)
        k->vm.console_listeners--;
    pthread_mutex_unlock(&k->vm.out_lock);
}

/* Called per chunk (the API copies 8 KiB at a time), never per byte. */
size_t kvmbox_vm_console_read(struct kvmbox_vm *k, uint64_t *pos, void *buf, size_t len)
{
    uint64_t lost;
    pthread_mutex_lock(&k->vm.out_lock);
    size_t n = ring_get(&k->vm.out_ring, pos, buf, len, &lost);
    pthread_mutex_unlock(&k->vm.out_lock);
    return n;
}

uint64_t kvmbox_vm_console_end(struct kvmbox_vm *k)
{
    pthread_mutex_lock(&k->vm.out_lock);
    uint64_t end = k->vm.out_ring.written;
    pthread_mutex_unlock(&k->vm.out_lock);
    return end;
}

size_t kvmbox_vm_console_write(struct kvmbox_vm *k, const void *buf, size_t len)
{
    return serial_receive(k->vm.com1, buf, len);
}
