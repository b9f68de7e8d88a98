/* kvmcost: what the host's KVM charges for the calls kvmbox makes to start and stop a VM,
 * with none of kvmbox's own work around them: the floor any VMM using the in-kernel irqchip
 * and PIT pays on this host. Used by bench/run.sh next to kvmbox's own start-up trace.
 * usage: kvmcost RUNS VCPUS MEM_MIB
 * prints one line per step: "host MEDIAN_MS NAME" (median over RUNS fresh VMs). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MMIO_START (3ULL << 30) /* kvmbox's PCI hole: RAM above it moves to 4 GiB */
#define MAX_STEPS  16

static const char *const names[] = {
    "open /dev/kvm, KVM_GET_SUPPORTED_CPUID",
    "KVM_CREATE_VM",
    "memory slots",
    "KVM_CREATE_IRQCHIP",
    "KVM_SET_GSI_ROUTING",
    "KVM_CREATE_PIT2",
    "vCPUs (create, CPUID, LAPIC, registers)",
    "first KVM_RUN to the first exit",
    "close: vCPUs and VM (teardown)",
};
#define NSTEPS (sizeof(names) / sizeof(names[0]))

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "kvmcost: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The PC routing kvmbox sets: ISA IRQs to both 8259s and the IOAPIC, IRQ 0 on pin 2. */
static void set_routes(int vm)
{
    struct {
        struct kvm_irq_routing r;
        struct kvm_irq_routing_entry e[64];
    } rt = { 0 };
    unsigned n = 0;
    for (unsigned gsi = 0; gsi < 24; gsi++) {
        if (gsi < 16 && gsi != 2) {
            rt.e[n].gsi = gsi, rt.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
            rt.e[n].u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            rt.e[n].u.irqchip.pin = gsi % 8;
            n++;
        }
        if (gsi == 2)
            continue;
        rt.e[n].gsi = gsi, rt.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
        rt.e[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        rt.e[n].u.irqchip.pin = gsi == 0 ? 2 : gsi;
        n++;
    }
    rt.r.nr = n;
    if (ioctl(vm, KVM_SET_GSI_ROUTING, &rt) < 0)
        die("KVM_SET_GSI_ROUTING");
}

/* A 32-bit flat guest whose first instruction is `out %al, $0xf4`. */
static void boot_state(int fd, uint8_t *ram)
{
    static const uint8_t code[] = { 0xe6, 0xf4, 0xf4 }; /* out %al,$0xf4; hlt */
    memcpy(ram + 0x100000, code, sizeof(code));
    struct kvm_sregs s;
    if (ioctl(fd, KVM_GET_SREGS, &s) < 0)
        die("KVM_GET_SREGS");
    struct kvm_segment seg = {
        .base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 11, .present = 1, .s = 1, .db = 1, .g = 1
    };
    s.cs = seg;
    seg.type = 3, seg.selector = 0x18;
    s.ds = s.es = s.fs = s.gs = s.ss = seg;
    s.cr0 |= 1;
    if (ioctl(fd, KVM_SET_SREGS, &s) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs r = { .rflags = 2, .rip = 0x100000 };
    if (ioctl(fd, KVM_SET_REGS, &r) < 0)
        die("KVM_SET_REGS");
}

static void one_vm(unsigned ncpus, uint64_t mem, double *t)
{
    double a = now_ms();
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
    cpuid->nent = 256;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
        die("KVM_GET_SUPPORTED_CPUID");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    double b = now_ms();
    t[0] = b - a;
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    a = now_ms(), t[1] = a - b;
    uint8_t *ram = mmap(NULL, mem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                        0);
    if (ram == MAP_FAILED)
        die("mmap");
    uint64_t low = mem < MMIO_START ? mem : MMIO_START;
    struct kvm_userspace_memory_region r = { .slot = 0,
                                             .memory_size = low,
                                             .userspace_addr = (uint64_t)(uintptr_t)ram };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    if (mem > low) {
        r = (struct kvm_userspace_memory_region){ .slot = 1,
                                                  .guest_phys_addr = 4ULL << 30,
                                                  .memory_size = mem - low,
                                                  .userspace_addr = (uint64_t)(uintptr_t)(ram + low) };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            die("KVM_SET_USER_MEMORY_REGION (high)");
    }
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
        die("KVM_SET_TSS_ADDR");
    b = now_ms(), t[2] = b - a;
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        die("KVM_CREATE_IRQCHIP");
    a = now_ms(), t[3] = a - b;
    set_routes(vm);
    b = now_ms(), t[4] = b - a;
    struct kvm_pit_config pit = { 0 };
    if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
        die("KVM_CREATE_PIT2");
    a = now_ms(), t[5] = a - b;
    int *fds = calloc(ncpus, sizeof(int));
    void **runs = calloc(ncpus, sizeof(void *));
    struct kvm_run *run0 = NULL;
    for (unsigned i = 0; i < ncpus; i++) {
        fds[i] = ioctl(vm, KVM_CREATE_VCPU, (unsigned long)i);
        if (fds[i] < 0)
            die("KVM_CREATE_VCPU");
        void *m = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
        if (m == MAP_FAILED)
            die("mmap vCPU");
        runs[i] = m;
        if (i == 0)
            run0 = m;
        if (ioctl(fds[i], KVM_SET_CPUID2, cpuid) < 0)
            die("KVM_SET_CPUID2");
        struct kvm_lapic_state l;
        if (ioctl(fds[i], KVM_GET_LAPIC, &l) < 0 || ioctl(fds[i], KVM_SET_LAPIC, &l) < 0)
            die("KVM_GET/SET_LAPIC");
        if (i == 0)
            boot_state(fds[0], ram);
    }
    b = now_ms(), t[6] = b - a;
    if (ioctl(fds[0], KVM_RUN, 0) < 0)
        die("KVM_RUN");
    a = now_ms(), t[7] = a - b;
    if (run0->exit_reason != KVM_EXIT_IO)
        fprintf(stderr, "kvmcost: first exit %u, not the PIO write\n", run0->exit_reason);
    /* The kvm_run mappings hold the vCPUs, which hold the VM: the VM is destroyed by the last
     * close only once they are gone, as in kvmbox. */
    for (unsigned i = 0; i < ncpus; i++)
        munmap(runs[i], (size_t)run_size), close(fds[i]);
    close(vm);
    b = now_ms(), t[8] = b - a;
    munmap(ram, mem);
    close(kvm);
    free(fds);
    free(runs);
    free(cpuid);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kvmcost RUNS VCPUS MEM_MIB\n");
        return 2;
    }
    int runs = atoi(argv[1]);
    unsigned ncpus = (unsigned)atoi(argv[2]);
    uint64_t mem = strtoull(argv[3], NULL, 0) << 20;
    if (runs < 1 || ncpus < 1 || mem < (2 << 20))
        return 2;
    double *v[NSTEPS];
    for (unsigned s = 0; s < NSTEPS; s++)
        v[s] = calloc((size_t)runs, sizeof(double));
    for (int i = 0; i < runs; i++) {
        double t[NSTEPS];
        one_vm(ncpus, mem, t);
        for (unsigned s = 0; s < NSTEPS; s++)
            v[s][i] = t[s];
    }
    for (unsigned s = 0; s < NSTEPS; s++) {
        qsort(v[s], (size_t)runs, sizeof(double), cmp);
        double med = runs % 2 ? v[s][runs / 2] : (v[s][runs / 2 - 1] + v[s][runs / 2]) / 2;
        printf("host %.3f %s\n", med, names[s]);
    }
    return 0;
}
