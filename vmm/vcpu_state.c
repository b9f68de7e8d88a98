/* What KVM holds of a VM, saved and restored (vmm/snapshot.h): each vCPU's registers, FPU or
 * XSAVE and XCRs, the MSRs KVM lists, LAPIC, pending events, debug registers and MP state;
 * the in-kernel PIC and IOAPIC, the PIT and kvmclock. The kernel's own structures are stored
 * as they are (their layout is Linux's stable UAPI), each as one named field.
 *
 * Called on the main thread with every vCPU parked outside KVM_RUN (save) or created and not
 * yet running (restore). */
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/kvm.h"
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

/* A vCPU's CPUID table, as big as kvmbox ever makes one. */
#define CPUID_MAX (KVM_MAX_CPUID_ENTRIES + CPUID_EXTRA_ENTRIES)
struct cpuid_table {
    union { /* as struct msrs: clang refuses the flexible array inside a struct */
        struct kvm_cpuid2 h;
        uint8_t room[sizeof(struct kvm_cpuid2) + CPUID_MAX * sizeof(struct kvm_cpuid_entry2)];
    };
};

/* The CPUID the guest was given, so that a restore gives it the same one (it chose its code
 * paths by it) or refuses a host that lacks what it promised. Absent where KVM cannot say. */
static int save_cpuid(struct vcpu *v, struct st_writer *w, char *err, size_t errlen)
{
    struct cpuid_table *t = calloc(1, sizeof(*t));
    if (!t)
        return errf(err, errlen, -ENOMEM, "out of memory");
    t->h.nent = CPUID_MAX;
    if (ioctl(v->fd, KVM_GET_CPUID2, t) == 0 && t->h.nent <= CPUID_MAX)
        st_put(w, "cpuid", t->h.entries, t->h.nent * (uint32_t)sizeof(t->h.entries[0]));
    free(t);
    return 0;
}

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *e, unsigned n, uint32_t fn,
                                                 uint32_t idx)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == fn && (e[i].index == idx || !(e[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)))
            return &e[i];
    return NULL;
}

/* The feature words: a bit set in the saved table must be one this host would give. */
static const struct {
    uint32_t fn, idx;
    unsigned reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
} feature_words[] = {
    { 1, 0, 2 }, { 1, 0, 3 }, { 7, 0, 1 }, { 7, 0, 2 }, { 7, 0, 3 }, { 7, 1, 0 },
    { 0xd, 1, 0 }, { 0x80000001, 0, 2 }, { 0x80000001, 0, 3 },
};

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, unsigned reg)
{
    return !e ? 0 : reg == 0 ? e->eax : reg == 1 ? e->ebx : reg == 2 ? e->ecx : e->edx;
}

/* Sets the saved CPUID on vCPU V (before its first KVM_RUN: KVM allows it then) once every
 * feature it names is one this host's KVM gives a vCPU; no saved table: the one it got. */
static int load_cpuid(struct vm *vm, struct vcpu *v, const struct st_section *s, char *err, size_t errlen)
{
    static const char reg_name[] = "abcd";
    uint32_t len;
    const void *p = st_field(s, "cpuid", &len);
    if (!p)
        return 0;
    if (len % sizeof(struct kvm_cpuid_entry2) || len / sizeof(struct kvm_cpuid_entry2) > CPUID_MAX)
        return errf(err, errlen, -EBADMSG, "saved state: the CPUID of vCPU %u is malformed", s->instance);
    struct cpuid_table *saved = calloc(1, sizeof(*saved)), *mine = calloc(1, sizeof(*mine));
    int r = 0;
    if (!saved || !mine) {
        r = errf(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    saved->h.nent = len / sizeof(struct kvm_cpuid_entry2);
    memcpy(saved->h.entries, p, len);
    /* What this host gives a vCPU: the table the new vCPU got, as KVM reports it (some KVMs,
     * this project's PVM host among them, report more than kvmbox set: the host's own). */
    mine->h.nent = CPUID_MAX;
    if (ioctl(v->fd, KVM_GET_CPUID2, mine) < 0 || mine->h.nent > CPUID_MAX)
        cpuid_for_vcpu(vm->cpuid, v->id, vm->ncpus, &mine->h);
    for (size_t i = 0; i < sizeof(feature_words) / sizeof(feature_words[0]); i++) {
        uint32_t fn = feature_words[i].fn, idx = feature_words[i].idx;
        unsigned reg = feature_words[i].reg;
        uint32_t lack = reg_of(cpuid_find(saved->h.entries, saved->h.nent, fn, idx), reg) &
                        ~reg_of(cpuid_find(mine->h.entries, mine->h.nent, fn, idx), reg);
        if (lack) {
            r = errf(err, errlen, -ENOTSUP,
                     "the state was saved on a host with CPU features this host's KVM lacks "
                     "(CPUID leaf %#" PRIx32 ".%" PRIu32 " e%cx bits %#" PRIx32 ")",
                     fn, idx, reg_name[reg], lack);
            goto out;
        }
    }
    if (ioctl(v->fd, KVM_SET_CPUID2, saved) < 0)
        r = errf(err, errlen, -errno, "KVM_SET_CPUID2 on vCPU %u: %s", s->instance, strerror(errno));
out:
    free(saved);
    free(mine);
    return r;
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
    if ((r = save_cpuid(v, w, err, errlen)) < 0)
        return r;
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
    /* First: what KVM accepts of the rest (XSAVE features, MSRs) follows the CPUID. */
    if ((r = load_cpuid(vm, v, s, err, errlen)) < 0)
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
