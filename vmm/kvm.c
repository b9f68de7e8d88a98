#include "vmm/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/irq.h"
#include "vmm/layout.h"
#include "vmm/trace.h"
#include "common/util.h"
#include "vmm/vm.h"

#define KVM_DEV  "/dev/kvm"
#define MAX_MSRS 1024
/* In the hole below 4 GiB, clear of the LAPIC and of the firmware flash window (the top
 * 16 MiB), where QEMU puts them too. */
#define TSS_ADDR   0xfeffd000ULL
#define IDMAP_ADDR 0xfeffc000ULL

int kvm_supported_cpuid(struct vm *vm)
{
    pthread_mutex_lock(&vm->cpuid_lock);
    int r = 0;
    if (!vm->cpuid) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + KVM_MAX_CPUID_ENTRIES * sizeof(c->entries[0]));
        if (c)
            c->nent = KVM_MAX_CPUID_ENTRIES;
        r = !c ? -ENOMEM : ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0 ? -errno : 0;
        if (r < 0)
            free(c);
        else
            vm->cpuid = c;
    }
    pthread_mutex_unlock(&vm->cpuid_lock);
    return r;
}

static int get_msr_list(struct vm *vm)
{
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + MAX_MSRS * sizeof(uint32_t));
    if (!l)
        return -ENOMEM;
    l->nmsrs = MAX_MSRS;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        free(l);
        return 0; /* no MSR list: we set no MSRs */
    }
    vm->nmsrs = l->nmsrs;
    vm->msr_list = malloc(l->nmsrs * sizeof(uint32_t) + 1);
    if (!vm->msr_list) {
        free(l);
        return -ENOMEM;
    }
    memcpy(vm->msr_list, l->indices, l->nmsrs * sizeof(uint32_t));
    free(l);
    return 0;
}

int kvm_open_host(struct vm *vm, char *err, size_t errlen)
{
    vm->kvm_fd = open(KVM_DEV, O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return errf(err, errlen, -e,
                        "%s does not exist: KVM is not available on this host "
                        "(load the kvm module, or enable virtualization)",
                        KVM_DEV);
        if (e == EACCES || e == EPERM)
            return errf(err, errlen, -e, "no permission to open %s (add yourself to the kvm group)", KVM_DEV);
        return errf(err, errlen, -e, "cannot open %s: %s", KVM_DEV, strerror(e));
    }
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION)
        return errf(err, errlen, -ENOTSUP, "%s speaks KVM API %d, kvmbox needs %d", KVM_DEV, api,
                    KVM_API_VERSION);
    static const struct {
        int cap;
        const char *name;
    } need[] = {
        { KVM_CAP_IRQCHIP, "in-kernel irqchip" },
        { KVM_CAP_USER_MEMORY, "user memory slots" },
        { KVM_CAP_IMMEDIATE_EXIT, "immediate exit" },
        { KVM_CAP_IRQ_ROUTING, "IRQ routing" },
        { KVM_CAP_PIT2, "in-kernel PIT" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(need); i++)
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, need[i].cap) <= 0)
            return errf(err, errlen, -ENOTSUP, "KVM on this host lacks %s", need[i].name);
    int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max <= 0)
        max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    vm->max_vcpus = max > 0 ? (unsigned)max : 1;
    vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->run_size < (int)sizeof(struct kvm_run))
        return errf(err, errlen, -ENOTSUP, "KVM_GET_VCPU_MMAP_SIZE failed");
    /* KVM_GET_SUPPORTED_CPUID (0.3 ms here, all in KVM) is left to the vCPU threads, which
     * need it and fetch it while the machine is being built: kvm_supported_cpuid(). */
    return get_msr_list(vm);
}

void kvm_close_host(struct vm *vm)
{
    free(vm->cpuid);
    free(vm->msr_list);
    vm->cpuid = NULL;
    vm->msr_list = NULL;
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    vm->kvm_fd = -1;
}

static int add_memory_slots(struct vm *vm, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gm_region *g = &vm->mem.regions[i];
        struct kvm_userspace_memory_region r = {
            .slot = i,
            .guest_phys_addr = g->gpa,
            .memory_size = g->size,
            .userspace_addr = (uint64_t)(uintptr_t)g->host,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return errf(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION (%llu MiB at %#llx): %s",
                        (unsigned long long)(g->size >> 20), (unsigned long long)g->gpa, strerror(errno));
    }
    if (!vm->fw.size)
        return 0;
    /* The firmware image: read-only memory where KVM can enforce it (guest writes then exit
     * as MMIO and are dropped), else ordinary memory that is refreshed on every boot. */
    bool ro = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
    struct kvm_userspace_memory_region r = {
        .slot = vm->mem.nregions,
        .flags = ro ? KVM_MEM_READONLY : 0,
        .guest_phys_addr = fw_image_base(&vm->fw),
        .memory_size = vm->fw.size,
        .userspace_addr = (uint64_t)(uintptr_t)vm->fw.host,
    };
    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return errf(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION (firmware at %#llx): %s",
                    (unsigned long long)r.guest_phys_addr, strerror(errno));
    return 0;
}

int kvm_create_machine(struct vm *vm, char *err, size_t errlen)
{
    int fd;
    do
        fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_VM: %s", strerror(errno));
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    vm->vm_fd = fd;
    trace_mark("KVM_CREATE_VM");
    /* Memory slots go in before the irqchip exists: afterwards every slot change waits for
     * an SRCU grace period, which costs about 6 ms here (measured; 0.1 ms before). */
    int r = add_memory_slots(vm, err, errlen);
    if (r < 0)
        return r;
    trace_mark("memory slots");
    /* Needed by Intel hosts for real mode; harmless elsewhere. */
    if (ioctl(fd, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR) < 0)
        return errf(err, errlen, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t idmap = IDMAP_ADDR;
    ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap); /* optional: absent on non-VMX hosts */
    if (ioctl(fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
    trace_mark("KVM_CREATE_IRQCHIP");
    return 0;
}

int kvm_attach_irqs(struct vm *vm, char *err, size_t errlen)
{
    int r = irq_attach(vm);
    if (r < 0)
        return errf(err, errlen, r,
                    "cannot set up interrupt routing (GSI routes, irqfd, "
                    "ioeventfd): %s",
                    strerror(-r));
    trace_mark("irqfds, GSI routing, ioeventfds");
    return 0;
}

int kvm_create_pit(struct vm *vm)
{
    struct kvm_pit_config pit = { .flags = 0 };
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return -errno;
    trace_mark("KVM_CREATE_PIT2");
    return 0;
}

void kvm_destroy_machine(struct vm *vm)
{
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    vm->vm_fd = -1;
}
