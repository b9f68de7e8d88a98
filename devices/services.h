/* What a device may ask of the machine it is part of. Every device (in devices/ and
 * virtio/) is created with a pointer to one struct dev_services and reaches the VM only
 * through it: devices and virtio include no vmm/vm.h (docs/architecture.md, "Layers";
 * tests/t-layers.sh checks it). The VM (vmm/vm.c) fills the table once; it lives as long
 * as the VM, so a device keeps the pointer.
 *
 * Which thread may call what is written next to each member. Calls that change the machine
 * (add_device, map_range, msi_alloc) are made while the device is created, on the thread
 * that builds the VM, before any vCPU runs; the others are safe from any thread. */
#ifndef KVMBOX_SERVICES_H
#define KVMBOX_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"
#include "vmm/bus.h"
#include "vmm/sandbox.h"

struct guest_mem;
struct st_writer;
struct st_section;

/* A device's part of a saved state (vmm/state.h, docs/savestate.md): SAVE writes its
 * fields, LOAD reads them back on restore (0, or -errno with ERR saying what is wrong). */
typedef int (*dev_save_fn)(void *dev, struct st_writer *w);
typedef int (*dev_load_fn)(void *dev, const struct st_section *s, char *err, size_t errlen);

enum dev_space { DEV_PIO, DEV_MMIO };

struct dev_services {
    void *ctx;             /* the VM: passed back to every call, opaque to devices */
    struct guest_mem *mem; /* guest RAM: reach it with gm_ptr() and friends only */

    /* Creation: the VM takes DEV for guest resets (RESET, may be NULL) and its teardown
     * (DESTROY, in reverse order of creation). 0 or -ENOSPC; on failure the caller still
     * owns DEV. */
    int (*add_device)(void *ctx, const char *name, void *dev, void (*reset)(void *), void (*destroy)(void *));
    /* Creation: QUIESCE(DEV) runs once the guest has stopped for good, before anyone waiting
     * for the VM is told (disks flush and drop their image locks there). */
    void (*on_quiesce)(void *ctx, void *dev, void (*quiesce)(void *));
    /* Creation: OPS(DEV) serve guest accesses to [BASE, BASE+LEN) of SPACE; a vCPU thread
     * calls them with an offset into the range (docs/architecture.md: the locking contract).
     * -EINVAL (empty, overflowing), -EEXIST (overlap) or -ENOSPC. */
    int (*map_range)(void *ctx, enum dev_space space, uint64_t base, uint64_t len, const struct dev_ops *ops,
                     void *dev);

    /* Any thread: level of the wired interrupt line GSI (ISA IRQs 0-15, PCI INTx 16-23). */
    void (*irq_line)(void *ctx, unsigned gsi, bool level);
    /* Creation: an MSI source (index >= 0, or -errno); no route until msi_set. Freed by
     * msi_free from the device's destroy. */
    int (*msi_alloc)(void *ctx);
    void (*msi_free)(void *ctx, int msi);
    /* Any thread: points MSI at the guest's ADDR/DATA; 0 or -errno. */
    int (*msi_set)(void *ctx, int msi, uint64_t addr, uint32_t data);
    /* Any thread, the data path: raises MSI once (an eventfd write with irqfd). */
    void (*msi_fire)(void *ctx, int msi);
    /* Any thread: guest writes of LEN bytes at MMIO ADDR signal FD without an exit. 0, or
     * -ENOTSUP (no ioeventfd: the device's MMIO write handler must signal FD itself). */
    int (*ioeventfd_add)(void *ctx, uint64_t addr, uint32_t len, int fd);
    void (*ioeventfd_del)(void *ctx, uint64_t addr, uint32_t len, int fd);

    /* Any thread: ends the VM with REASON (the first request wins and carries CODE and MSG),
     * or asks for a guest reset. Neither blocks nor waits for the vCPUs. */
    void (*request_stop)(void *ctx, enum kvmbox_stop reason, uint32_t code, const char *msg);
    void (*request_reset)(void *ctx);
    /* A device's own thread, once its setup is done: enters the seccomp sandbox of CLS (or
     * stops the VM saying why). */
    void (*thread_sandbox)(void *ctx, enum sandbox_class cls);
    /* Any thread: one line for the host (kvmbox_config.log; dropped without one). The
     * library never prints: this is where a device's messages go. Callers rate-limit what a
     * guest can trigger. */
    void (*log)(void *ctx, const char *line);
    /* Creation: DEV's saved state, a section of version VERSION written by SAVE and read by
     * LOAD; SAVE_FAILED (may be NULL) undoes what SAVE began (it may pause the device) when
     * the save as a whole failed and the VM runs on. */
    void (*on_save)(void *ctx, void *dev, unsigned version, dev_save_fn save, dev_load_fn load,
                    void (*save_failed)(void *dev));
};

/* Formatting wrappers (devices/services.c). */
void dev_request_stop(const struct dev_services *s, enum kvmbox_stop reason, uint32_t code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
void dev_log(const struct dev_services *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline int dev_map_pio(const struct dev_services *s, uint16_t port, uint64_t len,
                              const struct dev_ops *ops, void *dev)
{
    return s->map_range(s->ctx, DEV_PIO, port, len, ops, dev);
}

static inline int dev_map_mmio(const struct dev_services *s, uint64_t base, uint64_t len,
                               const struct dev_ops *ops, void *dev)
{
    return s->map_range(s->ctx, DEV_MMIO, base, len, ops, dev);
}

#endif
