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
#include "vmm/trace.h"
#include "common/util.h"
#include "vmm/vm.h"

#define SIG_KICK (SIGRTMIN + 1)

#define CR0_PE                  0x1ULL
#define CR0_ET                  0x10ULL
#define CR0_NE                  0x20ULL
#define CR0_PG                  0x80000000ULL
#define CR4_PAE                 0x20ULL
#define EFER_LME                0x100ULL
#define EFER_LMA                0x400ULL
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MISC_ENABLE_FAST_STRING 0x1ULL
#define APIC_LVT0               0x350
#define APIC_LVT1               0x360
#define APIC_MODE_EXTINT        0x700
#define APIC_MODE_NMI           0x400

#define SEL_CODE 0x10
#define SEL_DATA 0x18
#define SEL_TSS  0x20

int vcpu_prepare_boot_tables(struct vm *vm)
{
    /* GDT: null, null, code (0x10), data (0x18). The code descriptor is 64-bit for the
     * Linux 64-bit entry and 32-bit otherwise, matching the segment state we load. */
    bool lm = vm->boot.proto == BOOT_LINUX64;
    uint64_t gdt[4] = { 0, 0, lm ? 0x00af9b000000ffffULL : 0x00cf9b000000ffffULL, 0x00cf93000000ffffULL };
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
    /* Room for one entry after the header (a struct with a flexible array cannot be followed
     * by another member in standard C, which clang enforces). */
    union {
        struct kvm_msrs h;
        char room[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
    } m = { 0 };
    m.h.nmsrs = 1;
    m.h.entries[0].index = MSR_IA32_MISC_ENABLE;
    m.h.entries[0].data = MISC_ENABLE_FAST_STRING;
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

/* Creates vCPU V's fd and kvm_run mapping and sets its CPUID, MSRs and LAPIC wiring, on the
 * vCPU's own thread. Returns 0, or a negative errno with *WHAT naming the call that failed. */
static int vcpu_init_one(struct vm *vm, struct vcpu *v, const char **what)
{
    *what = "KVM_CREATE_VCPU";
    int fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)v->id);
    if (fd < 0)
        return -errno;
    v->fd = fd;
    *what = "mmap of the vCPU's kvm_run";
    void *run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED)
        return -errno;
    __atomic_store_n(&v->run, run, __ATOMIC_RELEASE); /* vcpus_kick() reads it */
    /* On the stack: a malloc here would give each vCPU thread a malloc arena of its own
     * (64 KiB and more of resident memory per thread). */
    union {
        struct kvm_cpuid2 c;
        uint8_t bytes[sizeof(struct kvm_cpuid2) +
                      (KVM_MAX_CPUID_ENTRIES + CPUID_EXTRA_ENTRIES) * sizeof(struct kvm_cpuid_entry2)];
    } cpuid;
    cpuid_for_vcpu(vm->cpuid, v->id, vm->ncpus, &cpuid.c);
    *what = "KVM_SET_CPUID2";
    if (ioctl(fd, KVM_SET_CPUID2, &cpuid.c) < 0)
        return -errno;
    *what = "KVM_SET_MSRS";
    int r = set_msrs(v);
    if (r < 0)
        return r;
    *what = "KVM_GET/SET_LAPIC";
    return set_lapic_wiring(v);
}

/* ---- the vCPU threads' life: launched, create their vCPU, sandboxed, go, stop -------------
 *
 * The threads are started before the machine is built, so that starting them (a new thread
 * can wait a while for a CPU on a busy host) overlaps with building it. Each one fetches the
 * supported CPUID (the first one does, once per VM), waits for the VM's irqchip, creates and
 * sets up its own vCPU (in parallel with the others and with the main thread setting the
 * routing and loading the kernel; vCPU 0's thread then creates the PIT), enters its sandbox
 * and waits for the go. vm->lock and vm->vcpu_cond guard the phase. */

/* Waits until the phase reaches PHASE or the threads are told to quit; true to go on. */
static bool vcpu_wait_phase(struct vm *vm, unsigned phase)
{
    pthread_mutex_lock(&vm->lock);
    while (vm->vcpu_phase < phase && !vm->vcpus_quit)
        pthread_cond_wait(&vm->vcpu_cond, &vm->lock);
    bool go = !vm->vcpus_quit;
    pthread_mutex_unlock(&vm->lock);
    return go;
}

static void vcpu_set_phase(struct vm *vm, unsigned phase)
{
    pthread_mutex_lock(&vm->lock);
    vm->vcpu_phase = phase;
    pthread_cond_broadcast(&vm->vcpu_cond);
    pthread_mutex_unlock(&vm->lock);
}

static void *vcpu_thread(void *arg);
static void kick_handler(int sig)
{
    (void)sig;
}

int vcpus_launch(struct vm *vm, char *err, size_t errlen)
{
    if (!vm->vcpus) {
        vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
        if (!vm->vcpus)
            return errf(err, errlen, -ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&vm->lock);
    vm->vcpu_phase = VCPU_PHASE_WAIT;
    __atomic_store_n(&vm->vcpus_quit, false, __ATOMIC_SEQ_CST);
    vm->vcpus_created = 0;
    vm->vcpu_error = 0;
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->vcpus[i] = (struct vcpu){ .vm = vm, .id = i, .fd = -1 };
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
        /* The thread names itself (one prctl; naming it from here costs an open, a write
         * and a close of /proc/self/task/TID/comm per vCPU). */
        r = -pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i]);
        if (r == 0)
            vm->vcpus[i].thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    vm->vcpus_launched = true;
    if (r < 0)
        return errf(err, errlen, r, "cannot start vCPU thread: %s", strerror(-r));
    return 0;
}

void vcpus_allow_create(struct vm *vm)
{
    vcpu_set_phase(vm, VCPU_PHASE_CREATE);
}

int vcpus_wait_created(struct vm *vm, char *err, size_t errlen)
{
    pthread_mutex_lock(&vm->lock);
    while (vm->vcpus_created < vm->ncpus && !vm->vcpu_error)
        pthread_cond_wait(&vm->vcpu_cond, &vm->lock);
    int r = vm->vcpu_error;
    unsigned id = vm->vcpu_error_id;
    const char *what = vm->vcpu_error_what;
    pthread_mutex_unlock(&vm->lock);
    if (r < 0 && id == VCPU_ERROR_VM)
        return errf(err, errlen, r, "%s: %s", what, strerror(-r));
    if (r < 0)
        return errf(err, errlen, r, "%s on vCPU %u: %s", what, id, strerror(-r));
    /* The boot CPU's entry state, now that the kernel is loaded; its thread waits for the go.
     * Through firmware, the boot vCPU starts where KVM puts a new one: the reset vector. */
    r = vm->fw.size ? 0 : set_boot_state(&vm->vcpus[0], &vm->boot);
    return r < 0 ? errf(err, errlen, r, "setting the boot vCPU's registers: %s", strerror(-r)) : 0;
}

void vcpus_go(struct vm *vm)
{
    vcpu_set_phase(vm, VCPU_PHASE_RUN);
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

/* KVM finishes an I/O or MMIO exit (a PIO read's value into the register) only on the next
 * KVM_RUN: before parking for a pause, that is done with immediate_exit set, so no guest
 * instruction runs and the registers a save reads are complete (KVM API: KVM_EXIT_IO). */
static void vcpu_complete_io(struct vcpu *v)
{
    if (!__atomic_load_n(&v->io_pending, __ATOMIC_SEQ_CST))
        return;
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (ioctl(v->fd, KVM_RUN, 0) < 0 && errno != EINTR && errno != EAGAIN) {
        /* the next KVM_RUN reports it */
    }
    __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&v->io_pending, false, __ATOMIC_SEQ_CST);
}

static void vcpu_run_loop(struct vcpu *v)
{
    struct vm *vm = v->vm;
    bool first = v->id == 0;
    while (!vm_stopping(vm) && !__atomic_load_n(&vm->vcpus_quit, __ATOMIC_SEQ_CST)) {
        if (__atomic_load_n(&vm->paused, __ATOMIC_SEQ_CST))
            vcpu_complete_io(v);
        vm_vcpu_checkpoint(vm);
        if (vm_stopping(vm))
            break;
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                /* vcpus_kick() sets it from another thread. Cleared seq_cst, before the
                 * loop's checks: a kick whose 1 this overwrites had already set the flag
                 * (stop, quit, pause) those checks then see. */
                __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                continue;
            }
            char msg[96];
            snprintf(msg, sizeof(msg), "KVM_RUN failed: %s", strerror(errno));
            fatal_exit(v, msg);
            break;
        }
        __atomic_store_n(&v->io_pending,
                         v->run->exit_reason == KVM_EXIT_IO || v->run->exit_reason == KVM_EXIT_MMIO,
                         __ATOMIC_SEQ_CST);
        if (first) {
            trace_mark("vCPU 0 first exit");
            first = false;
        }
        switch (exit_dispatch(v->run, (size_t)vm->run_size, &vm->pio, &vm->mmio)) {
        case EXIT_CONTINUE:
        case EXIT_INTERRUPTED: break;
        case EXIT_RESET: vm_request_reset(vm); break;
        case EXIT_POWEROFF: vm_request_stop(vm, KVMBOX_STOP_POWEROFF, 0, "guest powered off"); break;
        case EXIT_SHUTDOWN:
        case EXIT_FATAL: fatal_exit(v, NULL); return;
        }
    }
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct vm *vm = v->vm;
    char name[16]; /* top -H and the benchmarks tell vCPUs from I/O threads by it */
    snprintf(name, sizeof(name), "vcpu%u", v->id);
    pthread_setname_np(pthread_self(), name);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (v->id == 0)
        trace_mark("vCPU 0 thread running");
    /* Before the VM exists: the supported CPUID is KVM work that needs no VM, so it overlaps
     * with the main thread creating one. */
    const char *what = "KVM_GET_SUPPORTED_CPUID";
    int r = kvm_supported_cpuid(vm);
    if (v->id == 0)
        trace_mark("vCPU 0 has the supported CPUID");
    if (!vcpu_wait_phase(vm, VCPU_PHASE_CREATE))
        return NULL;
    if (r == 0)
        r = vcpu_init_one(vm, v, &what);
    /* Any thread may create the PIT: here KVM's start of the PIT's kernel thread (which can
     * wait for a CPU on a busy host) overlaps with the main thread's work. */
    bool vm_level = false;
    if (r == 0 && v->id == 0) {
        what = "KVM_CREATE_PIT2";
        vm_level = true;
        r = kvm_create_pit(vm);
    }
    pthread_mutex_lock(&vm->lock);
    if (r < 0 && !vm->vcpu_error)
        vm->vcpu_error = r, vm->vcpu_error_id = vm_level ? VCPU_ERROR_VM : v->id, vm->vcpu_error_what = what;
    vm->vcpus_created++;
    pthread_cond_broadcast(&vm->vcpu_cond);
    pthread_mutex_unlock(&vm->lock);
    if (r < 0)
        return NULL;
    vm_thread_sandbox(vm, SANDBOX_VCPU);
    if (v->id == 0)
        trace_mark("vCPU 0 sandboxed");
    if (vcpu_wait_phase(vm, VCPU_PHASE_RUN))
        vcpu_run_loop(v);
    return NULL;
}

void vcpus_kick(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        struct kvm_run *run = __atomic_load_n(&v->run, __ATOMIC_ACQUIRE);
        if (run)
            __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(v->thread, SIG_KICK);
    }
}

void vcpus_stop(struct vm *vm)
{
    /* Threads still setting up or waiting for the go leave at once. */
    pthread_mutex_lock(&vm->lock);
    __atomic_store_n(&vm->vcpus_quit, true, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&vm->vcpu_cond);
    pthread_mutex_unlock(&vm->lock);
    vcpus_kick(vm);
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        pthread_join(v->thread, NULL);
        v->thread_started = false;
    }
    vm->vcpus_launched = false;
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
