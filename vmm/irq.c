#include "vmm/irq.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/vm.h"

void irq_init(struct irq_state *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    for (unsigned i = 0; i < IRQ_MAX_MSI; i++)
        s->msi[i].fd = -1;
    for (unsigned i = 0; i < IRQ_MAX_IOEVENTFD; i++)
        s->ioev[i].fd = -1;
}

void irq_probe(struct vm *vm)
{
    vm->irq.have_irqfd = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) > 0;
    vm->irq.have_ioeventfd = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD) > 0;
}

void irq_destroy(struct irq_state *s)
{
    for (unsigned i = 0; i < IRQ_MAX_MSI; i++)
        if (s->msi[i].fd >= 0)
            close(s->msi[i].fd);
    pthread_mutex_destroy(&s->lock);
}

/* PC wiring: ISA IRQs 0-15 reach both 8259s and the IOAPIC, with ISA IRQ 0 (the PIT) on
 * IOAPIC pin 2 as on real chipsets and QEMU (the MADT says so with an override); pins 16-23
 * are PCI INTx. Then one MSI route per programmed MSI source. */
static unsigned fill_routes(struct irq_state *s, struct kvm_irq_routing_entry *e)
{
    unsigned n = 0;
    for (unsigned gsi = 0; gsi < IRQ_MSI_GSI_BASE; gsi++) {
        if (gsi < 16 && gsi != 2) {
            e[n].gsi = gsi, e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
            e[n].u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            e[n].u.irqchip.pin = gsi % 8;
            n++;
        }
        if (gsi == 2)
            continue; /* pin 2 belongs to ISA IRQ 0 */
        e[n].gsi = gsi, e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
        e[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e[n].u.irqchip.pin = gsi == 0 ? 2 : gsi;
        n++;
    }
    for (unsigned i = 0; i < IRQ_MAX_MSI; i++) {
        if (!s->msi[i].used || !s->msi[i].routed)
            continue;
        e[n].gsi = IRQ_MSI_GSI_BASE + i, e[n].type = KVM_IRQ_ROUTING_MSI;
        e[n].u.msi.address_lo = (uint32_t)s->msi[i].addr;
        e[n].u.msi.address_hi = (uint32_t)(s->msi[i].addr >> 32);
        e[n].u.msi.data = s->msi[i].data;
        n++;
    }
    return n;
}

/* Replaces KVM's routing table. s->lock held; vm_fd valid. */
static int push_routes(struct vm *vm)
{
    struct kvm_irq_routing *rt = calloc(1, sizeof(*rt) + (2 * IRQ_MSI_GSI_BASE + IRQ_MAX_MSI) *
                                                             sizeof(struct kvm_irq_routing_entry));
    if (!rt)
        return -ENOMEM;
    rt->nr = fill_routes(&vm->irq, rt->entries);
    int r = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, rt) < 0 ? -errno : 0;
    free(rt);
    return r;
}

static int irqfd_bind(struct vm *vm, int idx, bool assign)
{
    struct kvm_irqfd f = { .fd = (uint32_t)vm->irq.msi[idx].fd,
                           .gsi = IRQ_MSI_GSI_BASE + idx,
                           .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN };
    return ioctl(vm->vm_fd, KVM_IRQFD, &f) < 0 ? -errno : 0;
}

static int ioeventfd_bind(struct vm *vm, const struct irq_ioeventfd *io, bool assign)
{
    struct kvm_ioeventfd e = {
        .addr = io->addr, .len = io->len, .fd = io->fd, .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN
    };
    return ioctl(vm->vm_fd, KVM_IOEVENTFD, &e) < 0 ? -errno : 0;
}

int irq_attach(struct vm *vm)
{
    struct irq_state *s = &vm->irq;
    pthread_mutex_lock(&s->lock);
    /* irqfds first, routes after: on the hosts tried, an irqfd bound after its MSI route was
     * installed never fired (found by guest-tests/virtio-reboot); a routing update after the
     * binding refreshes every irqfd's route. */
    int r = 0;
    for (int i = 0; r == 0 && s->have_irqfd && i < IRQ_MAX_MSI; i++) {
        if (!s->msi[i].used)
            continue;
        /* Interrupts raised while no KVM VM existed belong to the previous machine. */
        uint64_t stale;
        if (read(s->msi[i].fd, &stale, sizeof(stale)) < 0) {
            /* EAGAIN: nothing pending */
        }
        r = irqfd_bind(vm, i, true);
    }
    if (r == 0)
        r = push_routes(vm);
    for (int i = 0; r == 0 && s->have_ioeventfd && i < IRQ_MAX_IOEVENTFD; i++)
        if (s->ioev[i].used)
            r = ioeventfd_bind(vm, &s->ioev[i], true);
    pthread_mutex_unlock(&s->lock);
    return r;
}

int irq_msi_alloc(struct vm *vm, int *fd)
{
    struct irq_state *s = &vm->irq;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return -errno;
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    int idx = -ENOSPC;
    for (int i = 0; i < IRQ_MAX_MSI; i++) {
        if (s->msi[i].used)
            continue;
        s->msi[i] = (struct irq_msi){ .used = true, .fd = efd };
        idx = i;
        if (vm->vm_fd >= 0 && s->have_irqfd &&
            (irqfd_bind(vm, i, true) < 0 || push_routes(vm) < 0)) /* routes after: see irq_attach */
            idx = -errno;
        break;
    }
    if (idx < 0) {
        for (int i = 0; i < IRQ_MAX_MSI; i++)
            if (s->msi[i].fd == efd)
                s->msi[i] = (struct irq_msi){ .fd = -1 };
        close(efd);
    } else {
        *fd = efd;
    }
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&vm->irq_lock);
    return idx;
}

void irq_msi_free(struct vm *vm, int idx)
{
    struct irq_state *s = &vm->irq;
    if (idx < 0 || idx >= IRQ_MAX_MSI)
        return;
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    if (s->msi[idx].used) {
        if (vm->vm_fd >= 0 && s->have_irqfd)
            irqfd_bind(vm, idx, false);
        close(s->msi[idx].fd);
        s->msi[idx] = (struct irq_msi){ .fd = -1 };
    }
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&vm->irq_lock);
}

int irq_msi_set(struct vm *vm, int idx, uint64_t addr, uint32_t data)
{
    struct irq_state *s = &vm->irq;
    if (idx < 0 || idx >= IRQ_MAX_MSI)
        return -EINVAL;
    int r = 0;
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    struct irq_msi *m = &s->msi[idx];
    if (m->used && (!m->routed || m->addr != addr || m->data != data)) {
        m->routed = true, m->addr = addr, m->data = data;
        if (vm->vm_fd >= 0)
            r = push_routes(vm);
    }
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&vm->irq_lock);
    return r;
}

void irq_msi_fire(struct vm *vm, int idx)
{
    struct irq_state *s = &vm->irq;
    if (idx < 0 || idx >= IRQ_MAX_MSI)
        return;
    if (__atomic_load_n(&s->have_irqfd, __ATOMIC_RELAXED)) {
        uint64_t one = 1;
        if (write(s->msi[idx].fd, &one, sizeof(one)) < 0) {
            /* EAGAIN: the counter is saturated, an injection is pending anyway */
        }
        return;
    }
    /* No irqfd on this host: inject directly. */
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    struct kvm_msi msi = { .address_lo = (uint32_t)s->msi[idx].addr,
                           .address_hi = (uint32_t)(s->msi[idx].addr >> 32),
                           .data = s->msi[idx].data };
    bool ok = s->msi[idx].routed && vm->vm_fd >= 0;
    pthread_mutex_unlock(&s->lock);
    if (ok)
        ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi);
    pthread_rwlock_unlock(&vm->irq_lock);
}

int irq_ioeventfd_add(struct vm *vm, uint64_t addr, uint32_t len, int fd)
{
    struct irq_state *s = &vm->irq;
    int r = -ENOSPC;
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    if (vm->vm_fd >= 0 && !s->have_ioeventfd) {
        r = -ENOTSUP;
        goto out;
    }
    for (int i = 0; i < IRQ_MAX_IOEVENTFD; i++) {
        if (s->ioev[i].used)
            continue;
        s->ioev[i] = (struct irq_ioeventfd){ .used = true, .addr = addr, .len = len, .fd = fd };
        r = vm->vm_fd >= 0 ? ioeventfd_bind(vm, &s->ioev[i], true) : 0;
        if (r < 0)
            s->ioev[i] = (struct irq_ioeventfd){ .fd = -1 };
        break;
    }
out:
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&vm->irq_lock);
    return r;
}

void irq_ioeventfd_del(struct vm *vm, uint64_t addr, uint32_t len, int fd)
{
    struct irq_state *s = &vm->irq;
    pthread_rwlock_rdlock(&vm->irq_lock);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < IRQ_MAX_IOEVENTFD; i++) {
        struct irq_ioeventfd *io = &s->ioev[i];
        if (!io->used || io->addr != addr || io->len != len || io->fd != fd)
            continue;
        if (vm->vm_fd >= 0)
            ioeventfd_bind(vm, io, false);
        *io = (struct irq_ioeventfd){ .fd = -1 };
        break;
    }
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&vm->irq_lock);
}
