/* /dev/kvm and VM-level setup: capabilities, irqchip and PIT, memory slots, CPUID, MSRs. */
#ifndef KVMBOX_KVM_H
#define KVMBOX_KVM_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct kvm_cpuid2;

/* Opens /dev/kvm and reads what the host supports (API version, vCPU limit, CPUID, MSRs). */
int kvm_open_host(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
void kvm_close_host(struct vm *vm);
/* Creates the KVM VM: in-kernel irqchip with PC-style GSI routing, PIT, TSS, memory slots. */
int kvm_create_machine(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
void kvm_destroy_machine(struct vm *vm);

/* Builds the CPUID table of vCPU ID out of KVM's supported list: APIC IDs, topology for
 * NCPUS single-threaded cores in one package, the hypervisor bit. Returns a malloc'ed table. */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned id,
                                  unsigned ncpus);

#endif
