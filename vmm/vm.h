/* struct vm: the only owner of mutable state. Everything a VM has (fds, threads, memory,
 * devices) hangs off it and is released in reverse order of creation. */
#ifndef KVMBOX_VM_H
#define KVMBOX_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/services.h"
#include "include/kvmbox.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/scsi.h"
#include "vmm/boot.h"
#include "vmm/boot_firmware.h"
#include "vmm/fw_setup.h"
#include "vmm/bus.h"
#include "vmm/guest_mem.h"
#include "vmm/irq.h"
#include "vmm/ring.h"

struct kvm_run;
struct kvm_cpuid2;
struct st_writer;
struct st_section;
struct vm_save_req;
struct vm_snap_req;
struct vm_restore;
struct vm;

/* A device instance as the VM owns it: reset on guest reboot, destroyed at the end. */
struct vm_device {
    const char *name;
    void *dev;
    void (*reset)(void *dev);
    void (*destroy)(void *dev);
    void (*quiesce)(void *dev); /* the guest has stopped for good: release host resources */
    /* Its part of a saved state (vmm/snapshot.h: vm_device_on_save); NULL: none. */
    int (*save)(void *dev, struct st_writer *w);
    int (*load)(void *dev, const struct st_section *s, char *err, size_t errlen);
    void (*save_failed)(void *dev); /* a save stopped it and then failed: run on */
    unsigned state_version;
};

#define VM_MAX_DEVICES 32
#define VM_MAX_VCPUS   255

enum { VCPU_PHASE_WAIT, VCPU_PHASE_CREATE, VCPU_PHASE_RUN };
#define VCPU_ERROR_VM (~0u)

struct vcpu {
    struct vm *vm;
    unsigned id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    bool io_pending; /* an I/O exit KVM completes on the next KVM_RUN (atomic) */
};

struct console;
struct api;
struct pm;
struct pci_host;
struct vnet;
struct vblk;
#include "vmm/sandbox.h"

struct vm {
    struct kvmbox_config cfg; /* strings below are owned copies */
    char *kernel, *initrd, *cmdline, *name, *api_sock, *config_json;
    char *disk_strs[KVMBOX_MAX_DISKS][5];         /* path, format, serial, backing, backing format */
    struct vblk_info disk_info[KVMBOX_MAX_DISKS]; /* filled by the devices' constructors */
    char *cdrom_strs[KVMBOX_MAX_CDROMS];
    struct vscsi_info cdrom_info[KVMBOX_MAX_CDROMS];
    char *nic_strs[KVMBOX_MAX_NICS][1 + KVMBOX_MAX_HOSTFWD]; /* name, hostfwd rules */
    struct vnet_info nic_info[KVMBOX_MAX_NICS];
    char *runtime_dir;

    int kvm_fd;
    int vm_fd; /* -1 while the machine is being rebuilt */
    int run_size;
    unsigned max_vcpus;
    struct kvm_cpuid2 *cpuid;   /* KVM_GET_SUPPORTED_CPUID, once the vCPU threads fetched it */
    pthread_mutex_t cpuid_lock; /* while fetching it */
    uint32_t *msr_list;         /* KVM_GET_MSR_INDEX_LIST */
    unsigned nmsrs;

    struct guest_mem mem;
    struct bus pio, mmio;
    struct boot_info boot;
    struct fw_image fw; /* firmware boot: the image (size 0 for direct kernel boot) */
    char *firmware;
    struct fw_cfg *fw_cfg;
    struct fw_watch fw_watch; /* COM1 output, for the firmware's "No bootable device" */
    bool no_boot_seen;

    unsigned ncpus;
    struct vcpu *vcpus;
    /* The vCPU threads of the current machine (vmm/vcpu.c), under lock and vcpu_cond: the
     * phase they may enter, how many have created their vCPU, the first error. */
    pthread_cond_t vcpu_cond;
    bool vcpus_launched; /* threads started and not yet joined (main thread only) */
    unsigned vcpu_phase; /* VCPU_PHASE_* */
    bool vcpus_quit;     /* leave now, whatever the phase (also read atomically) */
    unsigned vcpus_created;
    int vcpu_error;
    unsigned vcpu_error_id; /* the vCPU, or VCPU_ERROR_VM for a VM-wide call */
    const char *vcpu_error_what;

    unsigned stages_built;   /* construction stages begun (vm.c's table), undone in reverse */
    struct dev_services svc; /* what devices may ask of this VM (vm.c fills it) */
    unsigned ndevices;
    struct vm_device devices[VM_MAX_DEVICES];
    struct serial *com1;
    struct pm *pm;
    struct console *console;
    struct api *api;

    /* COM1 output: the console fd, and a ring for console clients of the API. */
    pthread_mutex_t out_lock;
    struct ring out_ring;
    int out_event_fd;           /* eventfd: new output in the ring */
    unsigned console_listeners; /* API clients attached to the console (out_lock): the
                                     eventfd is written only when there is one */

    /* Pause: vCPUs park on pause_cond; vcpus_parked counts them. */
    bool paused;
    unsigned vcpus_parked;
    pthread_cond_t pause_cond;
    uint64_t kvmclock; /* KVM_GET_CLOCK at pause */
    uint64_t start_ns;
    unsigned reboots;        /* main thread adds, API reads: atomic, relaxed (a count) */
    bool reboot_on_poweroff; /* the API's reboot: the next poweroff boots again */

    /* Stop/reset requests from devices, vCPUs and other threads. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop_requested;
    bool reset_requested;
    struct kvmbox_result result;
    bool config_error;         /* creation failed because of the configuration */
    pthread_rwlock_t irq_lock; /* held for reading while injecting, for writing while vm_fd changes */
    struct irq_state irq;      /* MSI routes, irqfds, ioeventfds: re-attached to each KVM VM */
    struct pci_host *pci;
    struct vballoon *balloon;     /* NULL with --balloon off */
    struct vm_save_req *save_req; /* a save the API asked for (lock; vmm/snapshot.c) */
    struct vm_snap_req *snap_req; /* a snapshot request (lock; vmm/vm_snapshot.c) */
    struct vm_restore *restore;   /* the state being restored, during kvmbox_vm_create */
    bool ram_from_state;          /* RAM is a private mapping of a state file (vmm/snapshot.c) */
};

/* What the public API hands out (include/kvmbox.h); vmm/control.c implements the calls that
 * watch and steer it. */
struct kvmbox_vm {
    struct vm vm;
};

struct acpi_config;
/* The ACPI description of this machine (the same tables for direct and firmware boot). */
void vm_acpi_config(const struct vm *vm, struct acpi_config *ac);

/* Stop and reset requests, from vCPU threads, the console, the API and (through struct
 * dev_services) the devices. */
void vm_request_stop(struct vm *vm, enum kvmbox_stop reason, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void vm_request_reset(struct vm *vm);
bool vm_stopping(struct vm *vm);
/* COM1's output sink: the console fd and the ring for API console clients. */
void vm_console_output(void *vm, const uint8_t *buf, size_t len);
/* Every thread of a running VM calls this once its setup is done: it enters the thread
 * class's seccomp sandbox (unless the VM runs with --sandbox off); a failure stops the VM
 * with a message. */
void vm_thread_sandbox(struct vm *vm, enum sandbox_class cls);

/* Called by a vCPU thread before each KVM_RUN: parks it while the VM is paused. */
void vm_vcpu_checkpoint(struct vm *vm);
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);

#endif
