/* vCPUs: one thread each, running KVM_RUN and handing exits to the dispatcher. */
#ifndef KVMBOX_VCPU_H
#define KVMBOX_VCPU_H

#include <stddef.h>

struct vm;

/* A machine's vCPUs, in the order machine_build() uses these:
 * vcpus_launch() starts one thread per vCPU, which waits; vcpus_allow_create() (once the
 * irqchip exists) lets each thread create its vCPU and set CPUID, MSRs and LAPIC wiring, then
 * enter its sandbox; vcpus_wait_created() waits for all of them, reports the first failure,
 * and sets the boot CPU's entry state from vm->boot; vcpus_go() lets them run the guest. */
int vcpus_launch(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
void vcpus_allow_create(struct vm *vm);
int vcpus_wait_created(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
void vcpus_go(struct vm *vm);
/* Interrupts every vCPU thread, whatever its phase, so it sees the stop request (or leaves),
 * and waits for the threads to end. */
void vcpus_stop(struct vm *vm);
/* Makes every running vCPU leave KVM_RUN soon (immediate_exit + a signal). */
void vcpus_kick(struct vm *vm);
void vcpus_destroy(struct vm *vm);
/* Writes the boot page tables and GDT for the entry state into guest RAM. */
int vcpu_prepare_boot_tables(struct vm *vm);

#endif
