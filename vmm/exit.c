#include "vmm/exit.h"

#include <linux/kvm.h>
#include <stdio.h>

static enum exit_action handle_io(struct kvm_run *run, size_t run_size, struct bus *pio)
{
    unsigned size = run->io.size;
    uint64_t bytes = (uint64_t)size * run->io.count;
    if ((size != 1 && size != 2 && size != 4) || run->io.data_offset > run_size ||
        bytes > run_size - run->io.data_offset)
        return EXIT_FATAL;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool write = run->io.direction == KVM_EXIT_IO_OUT;
    for (uint32_t i = 0; i < run->io.count; i++)
        bus_access(pio, run->io.port, data + (size_t)i * size, size, write);
    return EXIT_CONTINUE;
}

static enum exit_action handle_mmio(struct kvm_run *run, struct bus *mmio)
{
    unsigned len = run->mmio.len;
    if (len == 0 || len > sizeof(run->mmio.data))
        return EXIT_FATAL;
    bus_access(mmio, run->mmio.phys_addr, run->mmio.data, len, run->mmio.is_write);
    return EXIT_CONTINUE;
}

enum exit_action exit_dispatch(struct kvm_run *run, size_t run_size, struct bus *pio, struct bus *mmio)
{
    switch (run->exit_reason) {
    case KVM_EXIT_IO: return handle_io(run, run_size, pio);
    case KVM_EXIT_MMIO: return handle_mmio(run, mmio);
    case KVM_EXIT_INTR: return EXIT_INTERRUPTED;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC; kvmbox always has one, so a HLT exit means the
         * guest halted with interrupts off for good. Treat it like a powered-off CPU. */
        return EXIT_FATAL;
    case KVM_EXIT_SHUTDOWN: return EXIT_SHUTDOWN;
    case KVM_EXIT_SYSTEM_EVENT:
        switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: return EXIT_POWEROFF;
        case KVM_SYSTEM_EVENT_RESET: return EXIT_RESET;
        default: return EXIT_FATAL;
        }
    default: return EXIT_FATAL;
    }
}

const char *exit_reason_name(uint32_t reason)
{
    static const char *const names[] = {
        [KVM_EXIT_UNKNOWN] = "KVM_EXIT_UNKNOWN",
        [KVM_EXIT_EXCEPTION] = "KVM_EXIT_EXCEPTION",
        [KVM_EXIT_IO] = "KVM_EXIT_IO",
        [KVM_EXIT_HYPERCALL] = "KVM_EXIT_HYPERCALL",
        [KVM_EXIT_DEBUG] = "KVM_EXIT_DEBUG",
        [KVM_EXIT_HLT] = "KVM_EXIT_HLT",
        [KVM_EXIT_MMIO] = "KVM_EXIT_MMIO",
        [KVM_EXIT_IRQ_WINDOW_OPEN] = "KVM_EXIT_IRQ_WINDOW_OPEN",
        [KVM_EXIT_SHUTDOWN] = "KVM_EXIT_SHUTDOWN (triple fault)",
        [KVM_EXIT_FAIL_ENTRY] = "KVM_EXIT_FAIL_ENTRY",
        [KVM_EXIT_INTR] = "KVM_EXIT_INTR",
        [KVM_EXIT_SET_TPR] = "KVM_EXIT_SET_TPR",
        [KVM_EXIT_TPR_ACCESS] = "KVM_EXIT_TPR_ACCESS",
        [KVM_EXIT_NMI] = "KVM_EXIT_NMI",
        [KVM_EXIT_INTERNAL_ERROR] = "KVM_EXIT_INTERNAL_ERROR",
        [KVM_EXIT_SYSTEM_EVENT] = "KVM_EXIT_SYSTEM_EVENT",
    };
    if (reason < sizeof(names) / sizeof(names[0]) && names[reason])
        return names[reason];
    return "unknown exit";
}

void exit_describe(const struct kvm_run *run, char *buf, size_t len)
{
    const char *name = exit_reason_name(run->exit_reason);
    switch (run->exit_reason) {
    case KVM_EXIT_INTERNAL_ERROR: {
        const char *what = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? "emulation failure"
                           : run->internal.suberror == KVM_INTERNAL_ERROR_SIMUL_EX
                               ? "exception while delivering an exception"
                               : "internal error";
        snprintf(buf, len, "%s: %s (suberror %u)", name, what, run->internal.suberror);
        break;
    }
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(buf, len, "%s: hardware entry failure reason %#llx", name,
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_IO:
        snprintf(buf, len, "%s: malformed port I/O exit (port %#x size %u count %u)", name, run->io.port,
                 run->io.size, run->io.count);
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        snprintf(buf, len, "%s: unhandled system event %u", name, run->system_event.type);
        break;
    case KVM_EXIT_HLT: snprintf(buf, len, "%s: vCPU halted with no way to wake it", name); break;
    default: snprintf(buf, len, "%s (%u)", name, run->exit_reason);
    }
}
