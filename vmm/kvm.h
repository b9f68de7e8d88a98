/* /dev/kvm and VM-level setup: capabilities, irqchip and PIT, memory slots, CPUID, MSRs. */
#ifndef KVMBOX_KVM_H
#define KVMBOX_KVM_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct kvm_cpuid2;

/* Opens /dev/kvm and reads what the host supports (API version, vCPU limit, MSRs). */
int kvm_open_host(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* KVM_GET_SUPPORTED_CPUID into vm->cpuid, the first time it is called (any thread; the
 * others wait for it). Returns 0 or a negative errno. */
int kvm_supported_cpuid(struct vm *vm) __attribute__((warn_unused_result));
void kvm_close_host(struct vm *vm);
/* Creates the KVM VM: memory slots, TSS, in-kernel irqchip. vCPUs may be created once it
 * returns. */
int kvm_create_machine(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Binds the VM's irqfds and ioeventfds and sets PC-style GSI routing (vmm/irq.c). */
int kvm_attach_irqs(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* The in-kernel PIT (after kvm_create_machine; independent of the vCPUs and of the routing).
 * Returns 0 or a negative errno. */
int kvm_create_pit(struct vm *vm) __attribute__((warn_unused_result));
void kvm_destroy_machine(struct vm *vm);

/* The most entries of KVM_GET_SUPPORTED_CPUID kvmbox reads, and the most cpuid_for_vcpu()
 * adds to them. */
#define KVM_MAX_CPUID_ENTRIES 256
#define CPUID_EXTRA_ENTRIES   6
/* Writes into OUT (room for supported->nent + CPUID_EXTRA_ENTRIES entries) the CPUID table
 * of vCPU ID, made from KVM's supported list: APIC IDs, topology for NCPUS single-threaded
 * cores in one package, the hypervisor bit. */
void cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned id, unsigned ncpus, struct kvm_cpuid2 *out);

#endif
