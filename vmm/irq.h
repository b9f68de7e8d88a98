/* Interrupt plumbing beyond the PC's wired lines: MSI routes with irqfds (a device thread
 * raises an MSI by writing an eventfd, KVM injects it) and ioeventfds (a guest write to a
 * doorbell address signals an eventfd in the kernel, with no exit to userspace).
 *
 * The tables live in struct vm and outlive the KVM VM: a guest reset rebuilds the KVM VM and
 * irq_attach() registers everything again on the new one. */
#ifndef KVMBOX_IRQ_H
#define KVMBOX_IRQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;

#define IRQ_MAX_MSI       512
#define IRQ_MAX_IOEVENTFD 256
#define IRQ_MSI_GSI_BASE  24 /* GSIs 0-23 are the IOAPIC pins */

struct irq_msi {
    bool used;
    bool routed; /* a route with addr/data is in KVM's table */
    uint64_t addr;
    uint32_t data;
    int fd; /* eventfd bound to GSI IRQ_MSI_GSI_BASE + index */
};

struct irq_ioeventfd {
    bool used;
    uint64_t addr;
    uint32_t len;
    int fd;
};

struct irq_state {
    pthread_mutex_t lock;
    bool have_irqfd, have_ioeventfd;
    struct irq_msi msi[IRQ_MAX_MSI];
    struct irq_ioeventfd ioev[IRQ_MAX_IOEVENTFD];
};

void irq_init(struct irq_state *s);
/* Reads what the host offers (irqfd, ioeventfd); kvm_fd must be open. */
void irq_probe(struct vm *vm);
/* Closes every eventfd; the KVM VM must be gone or about to go. */
void irq_destroy(struct irq_state *s);

/* Registers the PC routes, the MSI routes and every irqfd and ioeventfd on the current KVM
 * VM. Called once per KVM VM, with vm->irq_lock held for writing. */
int irq_attach(struct vm *vm) __attribute__((warn_unused_result));

/* Allocates an MSI source. Returns its index (>= 0) and its eventfd in *fd (owned by the
 * table: signal it with irq_msi_fire). No route is installed until irq_msi_set. */
int irq_msi_alloc(struct vm *vm, int *fd) __attribute__((warn_unused_result));
void irq_msi_free(struct vm *vm, int idx);
/* Points MSI IDX at ADDR/DATA (a guest's MSI-X table entry). Returns 0 or -errno. */
int irq_msi_set(struct vm *vm, int idx, uint64_t addr, uint32_t data);
/* Raises MSI IDX once. Safe from any thread. */
void irq_msi_fire(struct vm *vm, int idx);

/* Binds FD to guest writes of LEN bytes (any value) at MMIO address ADDR. Returns 0, or
 * -ENOTSUP when the host has no ioeventfd (the caller then signals FD from its MMIO handler). */
int irq_ioeventfd_add(struct vm *vm, uint64_t addr, uint32_t len, int fd);
void irq_ioeventfd_del(struct vm *vm, uint64_t addr, uint32_t len, int fd);

#endif
