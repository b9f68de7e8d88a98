/* vCPUs: one thread each, running KVM_RUN and handing exits to the dispatcher. */
#ifndef KVMBOX_VCPU_H
#define KVMBOX_VCPU_H

#include <stddef.h>

struct vm;

/* Creates the vCPU fds and sets CPUID, MSRs, LAPIC wiring and (for the boot CPU) the entry
 * state of vm->boot. */
int vcpus_create(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Starts one thread per vCPU. */
int vcpus_start(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Interrupts every vCPU so it sees the stop request, and waits for the threads to end. */
void vcpus_stop(struct vm *vm);
/* Makes every running vCPU leave KVM_RUN soon (immediate_exit + a signal). */
void vcpus_kick(struct vm *vm);
void vcpus_destroy(struct vm *vm);
/* Writes the boot page tables and GDT for the entry state into guest RAM. */
int vcpu_prepare_boot_tables(struct vm *vm);

#endif
