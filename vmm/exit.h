/* The vCPU exit dispatcher: a pure function of struct kvm_run and the buses, so unit tests
 * can feed it synthetic exits without KVM. */
#ifndef KVMBOX_EXIT_H
#define KVMBOX_EXIT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/bus.h"

struct kvm_run;

enum exit_action {
    EXIT_CONTINUE,    /* handled: run the vCPU again */
    EXIT_INTERRUPTED, /* KVM_RUN was interrupted: check for stop/reset, then run again */
    EXIT_SHUTDOWN,    /* triple fault */
    EXIT_RESET,       /* the guest asked for a reset through KVM (system event) */
    EXIT_POWEROFF,    /* the guest asked for poweroff through KVM (system event) */
    EXIT_FATAL,       /* kvmbox cannot handle this exit: stop the VM with status 4 */
};

/* Dispatches one exit. RUN_SIZE bounds the PIO data area so a bogus data_offset/count
 * cannot reach outside the kvm_run mapping. */
enum exit_action exit_dispatch(struct kvm_run *run, size_t run_size, struct bus *pio, struct bus *mmio);
/* The KVM_EXIT_* name of REASON, for messages. */
const char *exit_reason_name(uint32_t reason);
/* Describes a fatal exit in one line (without rip, which the caller adds). */
void exit_describe(const struct kvm_run *run, char *buf, size_t len);

#endif
