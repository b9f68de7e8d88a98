/* What KVM holds of a VM, saved and restored (vmm/snapshot.h): each vCPU's registers, FPU or
 * XSAVE and XCRs, the MSRs KVM lists, LAPIC, pending events, debug registers and MP state;
 * the in-kernel PIC and IOAPIC, the PIT and kvmclock. The kernel's own structures are stored
 * as they are (their layout is Linux's stable UAPI), each as one named field.
 *
 * Called on the main thread with every vCPU parked outside KVM_RUN (save) or created and not
 * yet running (restore). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/snapshot.h"
#include "vmm/state.h"
#include "common/util.h"
#include "vmm/vm.h"

#define VCPU_SECTION_VERSION 1
#define KVM_SECTION_VERSION  1
#define MAX_SAVED_MSRS       1024

/* One ioctl, its name in the error line. */
#define IOCTL(fd, req, arg, what) \
    (ioctl((fd), (req), (arg)) < 0 ? errf(err, errlen, -errno, "%s: %s", (what), strerror(errno)) : 0)

/* A kvm_msrs with room for its entries (a union: clang refuses a flexible array member
 * that is not at the end of a struct). */
struct msrs {
    union {
        struct kvm_msrs h;
        uint8_t room[sizeof(struct kvm_msrs) + MAX_SAVED_MSRS * sizeof(struct kvm_msr_entry)];
    };
};

/* The MSRs KVM lists, less those KVM_GET_MSRS refuses on this vCPU: KVM_GET_MSRS stops at the
 * first one it cannot read, so that one is dropped and the rest read again. */
static int read_msrs(struct vm *vm, int fd, struct msrs *m)
{
    unsigned n = vm->nmsrs < MAX_SAVED_MSRS ? vm->nmsrs : MAX_SAVED_MSRS;
    for (unsigned i = 0; i < n; i++)
        m->h.entries[i] = (struct kvm_msr_entry){ .index = vm->msr_list[i] };
    for (;;) {
        m->h.nmsrs = n;
        int got = ioctl(fd, KVM_GET_MSRS, m);
        if (got < 0)
            return -errno;
        if ((unsigned)got >= n)
            return (int)n;
        memmove(&m->h.entries[got], &m->h.entries[got + 1],
                (n - (unsigned)got - 1) * sizeof(m->h.entries[0]));
        n--;
        for (unsigned i = 0; i < n; i++)
            m->h.entries[i].data = 0;
    }
}

static int save_one_vcpu(struct vm *vm, struct vcpu *v, struct st_writer *w, char *err, size_t errlen)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_debugregs dregs;
    struct kvm_mp_state mp;
    int r;
    if ((r = IOCTL(v->fd, KVM_GET_REGS, &regs, "KVM_GET_REGS")) < 0 ||
        (r = IOCTL(v->fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS")) < 0 ||
        (r = IOCTL(v->fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC")) < 0 ||
        (r = IOCTL(v->fd, KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS")) < 0 ||
        (r = IOCTL(v->fd, KVM_GET_DEBUGREGS, &dregs, "KVM_GET_DEBUGREGS")) < 0 ||
        (r = IOCTL(v->fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE")) < 0)
        return r;
    st_begin(w, "vcpu", v->id, VCPU_SECTION_VERSION);
    st_put(w, "regs", &regs, sizeof(regs));
    st_put(w, "sregs", &sregs, sizeof(sregs));
    /* XSAVE when KVM has it (the whole FPU/SSE/AVX state), else the legacy FPU area. */
    if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
        struct kvm_xsave xs;
        if ((r = IOCTL(v->fd, KVM_GET_XSAVE, &xs, "KVM_GET_XSAVE")) < 0)
            return r;
        st_put(w, "xsave", &xs, sizeof(xs));
    } else {
        struct kvm_fpu fpu;
        if ((r = IOCTL(v->fd, KVM_GET_FPU, &fpu, "KVM_GET_FPU")) < 0)
            return r;
        st_put(w, "fpu", &fpu, sizeof(fpu));
    }
    if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
        struct kvm_xcrs xcrs;
        if ((r = IOCTL(v->fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS")) < 0)
            return r;
        st_put(w, "xcrs", &xcrs, sizeof(xcrs));
    }
    struct msrs *m = calloc(1, sizeof(*m));
    if (!m)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int n = read_msrs(vm, v->fd, m);
    if (n < 0) {
        free(m);
        return errf(err, errlen, n, "KVM_GET_MSRS: %s", strerror(-n));
    }
    st_put(w, "msrs", m->h.entries, (uint32_t)((size_t)n * sizeof(m->h.entries[0])));
    free(m);
    st_put(w, "lapic", &lapic, sizeof(lapic));
    st_put(w, "events", &events, sizeof(events));
    st_put(w, "debugregs", &dregs, sizeof(dregs));
    st_put(w, "mp_state", &mp, sizeof(mp));
    st_end(w);
    return 0;
}

int vcpus_state_save(struct vm *vm, struct st_writer *w, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        int r = save_one_vcpu(vm, &vm->vcpus[i], w, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

static int load_msrs(int fd, const struct st_section *s, char *err, size_t errlen)
{
    uint32_t len;
    const void *p = st_field(s, "msrs", &len);
    if (!p || len % sizeof(struct kvm_msr_entry) || len / sizeof(struct kvm_msr_entry) > MAX_SAVED_MSRS)
        return errf(err, errlen, -EBADMSG, "saved state: the MSRs of vCPU %u are malformed", s->instance);
    struct msrs *m = calloc(1, sizeof(*m));
    if (!m)
        return errf(err, errlen, -ENOMEM, "out of memory");
    m->h.nmsrs = len / sizeof(struct kvm_msr_entry);
    memcpy(m->h.entries, p, len);
    int set = ioctl(fd, KVM_SET_MSRS, m);
    int r = 0;
    if (set < 0)
        r = errf(err, errlen, -errno, "KVM_SET_MSRS on vCPU %u: %s", s->instance, strerror(errno));
    else if ((unsigned)set < m->h.nmsrs)
        r = errf(err, errlen, -ENOTSUP,
                 "this host's KVM refuses MSR %#x of vCPU %u (saved on a "
                 "host with other CPU features?)",
                 m->h.entries[set].index, s->instance);
    free(m);
    return r;
}

/* QEMU's order: registers, FPU, XCRs, segments, MSRs, MP state, LAPIC, events, debug
 * registers (the events and the LAPIC depend on what comes before). */
static int load_one_vcpu(struct vm *vm, struct vcpu *v, const struct st_section *s, char *err, size_t errlen)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_debugregs dregs;
    struct kvm_mp_state mp;
    int r;
    if ((r = st_need(s, "regs", &regs, sizeof(regs), err, errlen)) < 0 ||
        (r = st_need(s, "sregs", &sregs, sizeof(sregs), err, errlen)) < 0 ||
        (r = st_need(s, "lapic", &lapic, sizeof(lapic), err, errlen)) < 0 ||
        (r = st_need(s, "events", &events, sizeof(events), err, errlen)) < 0 ||
        (r = st_need(s, "debugregs", &dregs, sizeof(dregs), err, errlen)) < 0 ||
        (r = st_need(s, "mp_state", &mp, sizeof(mp), err, errlen)) < 0)
        return r;
    if ((r = IOCTL(v->fd, KVM_SET_REGS, &regs, "KVM_SET_REGS")) < 0)
        return r;
    uint32_t len;
    if (st_field(s, "xsave", &len)) {
        struct kvm_xsave xs;
        if ((r = st_need(s, "xsave", &xs, sizeof(xs), err, errlen)) < 0)
            return r;
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) <= 0)
            return errf(err, errlen, -ENOTSUP, "the state was saved with XSAVE, which this host's KVM lacks");
        if ((r = IOCTL(v->fd, KVM_SET_XSAVE, &xs, "KVM_SET_XSAVE")) < 0)
            return r;
    } else {
        struct kvm_fpu fpu;
        if ((r = st_need(s, "fpu", &fpu, sizeof(fpu), err, errlen)) < 0 ||
            (r = IOCTL(v->fd, KVM_SET_FPU, &fpu, "KVM_SET_FPU")) < 0)
            return r;
    }
    if (st_field(s, "xcrs", &len)) {
        struct kvm_xcrs xcrs;
        if ((r = st_need(s, "xcrs", &xcrs, sizeof(xcrs), err, errlen)) < 0 ||
            (r = IOCTL(v->fd, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS")) < 0)
            return r;
    }
    if ((r = IOCTL(v->fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS")) < 0 ||
        (r = load_msrs(v->fd, s, err, errlen)) < 0 ||
        (r = IOCTL(v->fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE")) < 0 ||
        (r = IOCTL(v->fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC")) < 0)
        return r;
    /* Only what was saved: the flags say which parts of the structure are valid. */
    events.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
                    KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
    if ((r = IOCTL(v->fd, KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS")) < 0)
        return r;
    return IOCTL(v->fd, KVM_SET_DEBUGREGS, &dregs, "KVM_SET_DEBUGREGS");
}

int vcpus_state_load(struct vm *vm, struct st_file *f, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        const struct st_section *s = st_find(f, "vcpu", i);
        if (!s)
            return errf(err, errlen, -EBADMSG, "saved state has no vCPU %u", i);
        if (s->version != VCPU_SECTION_VERSION)
            return errf(err, errlen, -EPROTO, "saved state: vcpu section version %u, this kvmbox reads %u",
                        s->version, VCPU_SECTION_VERSION);
        int r = load_one_vcpu(vm, &vm->vcpus[i], s, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- VM-wide: PIC, IOAPIC, PIT, kvmclock --------------------------------------------------- */

static const char *const chip_field[3] = { "pic_master", "pic_slave", "ioapic" };

int kvm_state_save(struct vm *vm, struct st_writer *w, char *err, size_t errlen)
{
    st_begin(w, "kvm", 0, KVM_SECTION_VERSION);
    for (unsigned i = 0; i < 3; i++) {
        struct kvm_irqchip chip = { .chip_id = i };
        int r = IOCTL(vm->vm_fd, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP");
        if (r < 0)
            return r;
        st_put(w, chip_field[i], &chip, sizeof(chip));
    }
    struct kvm_pit_state2 pit;
    int r = IOCTL(vm->vm_fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
    if (r < 0)
        return r;
    st_put(w, "pit", &pit, sizeof(pit));
    /* The clock read when the vCPUs were parked (vm_pause): the guest sees no time pass
     * between the save and the restore. */
    st_put_u64(w, "kvmclock", vm->kvmclock);
    st_end(w);
    return 0;
}

int kvm_state_load(struct vm *vm, struct st_file *f, char *err, size_t errlen)
{
    const struct st_section *s = st_find(f, "kvm", 0);
    if (!s)
        return errf(err, errlen, -EBADMSG, "saved state has no kvm section");
    if (s->version != KVM_SECTION_VERSION)
        return errf(err, errlen, -EPROTO, "saved state: kvm section version %u, this kvmbox reads %u",
                    s->version, KVM_SECTION_VERSION);
    int r;
    for (unsigned i = 0; i < 3; i++) {
        struct kvm_irqchip chip;
        if ((r = st_need(s, chip_field[i], &chip, sizeof(chip), err, errlen)) < 0)
            return r;
        if (chip.chip_id != i)
            return errf(err, errlen, -EBADMSG, "saved state: %s has chip id %u", chip_field[i], chip.chip_id);
        if ((r = IOCTL(vm->vm_fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP")) < 0)
            return r;
    }
    struct kvm_pit_state2 pit;
    if ((r = st_need(s, "pit", &pit, sizeof(pit), err, errlen)) < 0 ||
        (r = IOCTL(vm->vm_fd, KVM_SET_PIT2, &pit, "KVM_SET_PIT2")) < 0)
        return r;
    uint64_t clock;
    if (st_get_uint(s, "kvmclock", &clock) < 0)
        return errf(err, errlen, -EBADMSG, "saved state: the kvm section has no kvmclock");
    struct kvm_clock_data cd = { .clock = clock };
    return IOCTL(vm->vm_fd, KVM_SET_CLOCK, &cd, "KVM_SET_CLOCK");
}
