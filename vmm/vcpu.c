#include "vmm/vcpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/exit.h"
#include "vmm/kvm.h"
#include "vmm/layout.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define SIG_KICK (SIGRTMIN + 1)

#define CR0_PE 0x1ULL
#define CR0_ET 0x10ULL
#define CR0_NE 0x20ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_FAST_STRING 0x1ULL
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x700
#define APIC_MODE_NMI 0x400

#define SEL_CODE 0x10
#define SEL_DATA 0x18
#define SEL_TSS 0x20

int vcpu_prepare_boot_tables(struct vm *vm)
{
    /* GDT: null, null, code (0x10), data (0x18). The code descriptor is 64-bit for the
     * Linux 64-bit entry and 32-bit otherwise, matching the segment state we load. */
    bool lm = vm->boot.proto == BOOT_LINUX64;
    uint64_t gdt[4] = { 0, 0, lm ? 0x00af9b000000ffffULL : 0x00cf9b000000ffffULL,
                        0x00cf93000000ffffULL };
    int r = gm_write(&vm->mem, LAYOUT_GDT, gdt, sizeof(gdt));
    if (r < 0 || !lm)
        return r;
    /* Identity map of the first 4 GiB with 2 MiB pages: enough for kernel, zero page,
     * command line and initrd, which all live below 4 GiB. */
    uint64_t *pml4 = gm_ptr(&vm->mem, LAYOUT_PML4, 4096);
    uint64_t *pdpt = gm_ptr(&vm->mem, LAYOUT_PDPT, 4096);
    uint64_t *pd = gm_ptr(&vm->mem, LAYOUT_PD, 4 * 4096);
    if (!pml4 || !pdpt || !pd)
        return -EFAULT;
    memset(pml4, 0, 4096), memset(pdpt, 0, 4096);
    pml4[0] = LAYOUT_PDPT | 0x3;
    for (unsigned i = 0; i < 4; i++)
        pdpt[i] = (LAYOUT_PD + i * 4096) | 0x3;
    for (unsigned i = 0; i < 4 * 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x83;
    return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, bool code, bool lm)
{
    memset(s, 0, sizeof(*s));
    s->base = 0, s->limit = 0xffffffff, s->selector = sel;
    s->type = code ? 11 : 3, s->present = 1, s->s = 1, s->g = 1;
    s->l = code && lm;
    s->db = !(code && lm);
}

static int set_boot_state(struct vcpu *v, const struct boot_info *b)
{
    struct kvm_sregs s;
    if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
        return -errno;
    bool lm = b->proto == BOOT_LINUX64;
    flat_segment(&s.cs, SEL_CODE, true, lm);
    flat_segment(&s.ds, SEL_DATA, false, lm);
    s.es = s.fs = s.gs = s.ss = s.ds;
    memset(&s.tr, 0, sizeof(s.tr));
    s.tr.selector = SEL_TSS, s.tr.limit = 0x67, s.tr.type = 11, s.tr.present = 1;
    s.gdt.base = LAYOUT_GDT, s.gdt.limit = 4 * 8 - 1;
    s.idt.base = 0, s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_ET | (lm ? CR0_PG | CR0_NE : 0);
    s.cr4 = lm ? CR4_PAE : 0;
    s.cr3 = lm ? LAYOUT_PML4 : 0;
    s.efer = lm ? EFER_LME | EFER_LMA : 0;
    if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
        return -errno;
    struct kvm_regs r = { .rflags = 0x2, .rip = b->entry, .rsp = LAYOUT_BOOT_STACK };
    if (b->proto == BOOT_PVH || b->proto == BOOT_MULTIBOOT)
        r.rbx = b->arg, r.rax = b->magic;
    else
        r.rsi = b->arg;
    return ioctl(v->fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

static bool msr_listed(const struct vm *vm, uint32_t idx)
{
    for (unsigned i = 0; i < vm->nmsrs; i++)
        if (vm->msr_list[i] == idx)
            return true;
    return false;
}

/* Only MSRs that KVM lists are touched. */
static int set_msrs(struct vcpu *v)
{
    if (!msr_listed(v->vm, MSR_IA32_MISC_ENABLE))
        return 0;
    struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } m = { 0 };
    m.h.nmsrs = 1;
    m.e[0].index = MSR_IA32_MISC_ENABLE;
    m.e[0].data = MISC_ENABLE_FAST_STRING;
    return ioctl(v->fd, KVM_SET_MSRS, &m) == 1 ? 0 : -EIO;
}

/* The PC firmware's virtual-wire setup: LINT0 delivers the 8259's ExtINT, LINT1 NMI. */
static int set_lapic_wiring(struct vcpu *v)
{
    struct kvm_lapic_state l;
    if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
        return -errno;
    uint32_t lvt0 = APIC_MODE_EXTINT, lvt1 = APIC_MODE_NMI;
    memcpy(&l.regs[APIC_LVT0], &lvt0, 4);
    memcpy(&l.regs[APIC_LVT1], &lvt1, 4);
    return ioctl(v->fd, KVM_SET_LAPIC, &l) < 0 ? -errno : 0;
}

static int vcpu_init_one(struct vm *vm, struct vcpu *v, unsigned id, char *err, size_t errlen)
{
    v->vm = vm, v->id = id, v->fd = -1, v->run = NULL;
    v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (v->fd < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
    void *run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (run == MAP_FAILED)
        return errf(err, errlen, -errno, "mmap of vCPU %u state: %s", id, strerror(errno));
    v->run = run;
    struct kvm_cpuid2 *c = cpuid_for_vcpu(vm->cpuid, id, vm->ncpus);
    if (!c)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int r = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
    free(c);
    if (r < 0)
        return errf(err, errlen, r, "KVM_SET_CPUID2 on vCPU %u: %s", id, strerror(-r));
    if ((r = set_msrs(v)) < 0)
        return errf(err, errlen, r, "KVM_SET_MSRS on vCPU %u failed", id);
    if ((r = set_lapic_wiring(v)) < 0)
        return errf(err, errlen, r, "KVM_SET_LAPIC on vCPU %u: %s", id, strerror(-r));
    /* Through firmware, the boot vCPU starts where KVM puts a new one: the reset vector. */
    if (id == 0 && !vm->fw.size && (r = set_boot_state(v, &vm->boot)) < 0)
        return errf(err, errlen, r, "setting the boot vCPU's registers: %s", strerror(-r));
    return 0;
}

int vcpus_create(struct vm *vm, char *err, size_t errlen)
{
    if (!vm->vcpus) {
        vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
        if (!vm->vcpus)
            return errf(err, errlen, -ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->vcpus[i].fd = -1;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        int r = vcpu_init_one(vm, &vm->vcpus[i], i, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Reads up to 16 instruction bytes at the vCPU's rip, for the fatal-exit message. */
static void describe_rip(struct vcpu *v, char *buf, size_t len)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
        snprintf(buf, len, "rip unknown");
        return;
    }
    uint64_t linear = (sregs.efer & EFER_LMA ? 0 : sregs.cs.base) + regs.rip;
    uint64_t gpa = linear;
    if (sregs.cr0 & CR0_PG) {
        struct kvm_translation t = { .linear_address = linear };
        gpa = ioctl(v->fd, KVM_TRANSLATE, &t) == 0 && t.valid ? t.physical_address : UINT64_MAX;
    }
    int n = snprintf(buf, len, "rip %#llx", (unsigned long long)regs.rip);
    const uint8_t *code = gpa != UINT64_MAX ? gm_ptr(&v->vm->mem, gpa, 16) : NULL;
    if (!code) {
        snprintf(buf + n, len - (size_t)n, " (instruction bytes not in RAM)");
        return;
    }
    n += snprintf(buf + n, len - (size_t)n, ", code:");
    for (int i = 0; i < 16 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, " %02x", code[i]);
}

static void fatal_exit(struct vcpu *v, const char *what)
{
    char desc[160], rip[128];
    if (what)
        snprintf(desc, sizeof(desc), "%s", what);
    else
        exit_describe(v->run, desc, sizeof(desc));
    describe_rip(v, rip, sizeof(rip));
    vm_request_stop(v->vm, KVMBOX_STOP_ERROR, 0, "vCPU %u: %s at %s", v->id, desc, rip);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct vm *vm = v->vm;
    char name[16];
    snprintf(name, sizeof(name), "vcpu%u", v->id);
    pthread_setname_np(pthread_self(), name);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    vm_thread_sandbox(vm, SANDBOX_VCPU);

    while (!vm_stopping(vm)) {
        vm_vcpu_checkpoint(vm);
        if (vm_stopping(vm))
            break;
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                v->run->immediate_exit = 0;
                continue;
            }
            char msg[96];
            snprintf(msg, sizeof(msg), "KVM_RUN failed: %s", strerror(errno));
            fatal_exit(v, msg);
            break;
        }
        switch (exit_dispatch(v->run, (size_t)vm->run_size, &vm->pio, &vm->mmio)) {
        case EXIT_CONTINUE:
        case EXIT_INTERRUPTED:
            break;
        case EXIT_RESET:
            vm_request_reset(vm);
            break;
        case EXIT_POWEROFF:
            vm_request_stop(vm, KVMBOX_STOP_POWEROFF, 0, "guest powered off");
            break;
        case EXIT_SHUTDOWN:
        case EXIT_FATAL:
            fatal_exit(v, NULL);
            return NULL;
        }
    }
    return NULL;
}

static void kick_handler(int sig)
{
    (void)sig;
}

int vcpus_start(struct vm *vm, char *err, size_t errlen)
{
    struct sigaction sa = { .sa_handler = kick_handler };
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);
    /* Threads start with SIG_KICK blocked and unblock it themselves, so a kick can never
     * land on a thread that does not expect it. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    int r = 0;
    for (unsigned i = 0; i < vm->ncpus && r == 0; i++) {
        r = -pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i]);
        if (r == 0) { /* thread names: top -H and the benchmarks tell vCPUs from I/O */
            char name[16];
            snprintf(name, sizeof(name), "vcpu%u", i);
            pthread_setname_np(vm->vcpus[i].thread, name);
        }
        if (r == 0)
            vm->vcpus[i].thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0)
        return errf(err, errlen, r, "cannot start vCPU thread: %s", strerror(-r));
    return 0;
}

void vcpus_kick(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(v->thread, SIG_KICK);
    }
}

void vcpus_stop(struct vm *vm)
{
    vcpus_kick(vm);
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        pthread_join(v->thread, NULL);
        v->thread_started = false;
    }
}

void vcpus_destroy(struct vm *vm)
{
    if (!vm->vcpus)
        return;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (v->run)
            munmap(v->run, (size_t)vm->run_size);
        if (v->fd >= 0)
            close(v->fd);
        v->run = NULL, v->fd = -1;
    }
}
