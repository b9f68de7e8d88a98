#include <linux/kvm.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/kvm.h"

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT        (1u << 28)
#define TOPO_LEVEL_SMT         1
#define TOPO_LEVEL_CORE        2

static unsigned bits_for(unsigned n)
{
    unsigned b = 0;
    while ((1u << b) < n)
        b++;
    return b;
}

/* Leaf 0xB / 0x1F: level 0 = SMT (one thread per core), level 1 = cores in the package. */
static void set_topology(struct kvm_cpuid_entry2 *e, unsigned id, unsigned ncpus)
{
    e->edx = id;
    switch (e->index) {
    case 0: e->eax = 0, e->ebx = 1, e->ecx = TOPO_LEVEL_SMT << 8; break;
    case 1: e->eax = bits_for(ncpus), e->ebx = ncpus, e->ecx = TOPO_LEVEL_CORE << 8 | 1; break;
    default: e->eax = 0, e->ebx = 0, e->ecx = e->index;
    }
}

static void add_topology_leaf(struct kvm_cpuid2 *c, uint32_t leaf, unsigned id, unsigned ncpus)
{
    for (uint32_t sub = 0; sub < 3; sub++) {
        struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
        memset(e, 0, sizeof(*e));
        e->function = leaf;
        e->index = sub;
        e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        set_topology(e, id, ncpus);
    }
}

void cpuid_for_vcpu(const struct kvm_cpuid2 *sup, unsigned id, unsigned ncpus, struct kvm_cpuid2 *c)
{
    memset(c, 0, sizeof(*c));
    bool has_b = false, has_1f = false;
    for (unsigned i = 0; i < sup->nent; i++) {
        struct kvm_cpuid_entry2 e = sup->entries[i];
        switch (e.function) {
        case 1:
            e.ebx = (e.ebx & 0x0000ffffu) | (id << 24) | ((ncpus > 255 ? 255 : ncpus) << 16);
            e.ecx |= CPUID_1_ECX_HYPERVISOR;
            if (ncpus > 1)
                e.edx |= CPUID_1_EDX_HTT;
            break;
        case 4:
            /* Cores per package - 1 in EAX[31:26]; each cache private to one core. */
            if (e.eax & 0x1f)
                e.eax = (e.eax & 0x3ff) | (((1u << bits_for(ncpus)) - 1) << 26);
            break;
        case 0xb: has_b = true; continue;
        case 0x1f: has_1f = true; continue;
        case 0x80000008: e.ecx = (e.ecx & ~0xf0ffu) | (bits_for(ncpus) << 12) | (ncpus - 1); break;
        }
        c->entries[c->nent++] = e;
    }
    if (has_b)
        add_topology_leaf(c, 0xb, id, ncpus);
    if (has_1f)
        add_topology_leaf(c, 0x1f, id, ncpus);
}
