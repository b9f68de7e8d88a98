/* libkvmbox: boot and run a KVM guest from a program.
 *
 *   struct kvmbox_config cfg;
 *   kvmbox_config_init(&cfg);
 *   cfg.kernel = "guest.elf";
 *   struct kvmbox_result res;
 *   int status = kvmbox_run_config(&cfg, &res);   // exit status as the CLI uses it
 *
 * Nothing here prints or exits: errors come back as negative errno with a one-line message
 * in the result. The library owns no global mutable state; several VMs may run in one
 * process (each kvmbox_vm runs its vCPUs on threads of its own).
 */
#ifndef KVMBOX_H
#define KVMBOX_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVMBOX_MAX_CMDLINE 4096
#define KVMBOX_MSG_MAX 512
#define KVMBOX_MAX_DISKS 16

/* A virtio-blk disk. */
struct kvmbox_disk {
    const char *path;          /* image file */
    const char *format;        /* "raw", "qcow2" or NULL to probe (raw is then warned about) */
    bool readonly;             /* the guest sees a read-only disk; the image is opened read-only */
    bool cache_none;           /* O_DIRECT on the image (cache=none); else the page cache */
    const char *serial;        /* reported to the guest by GET_ID (at most 20 bytes); NULL: none */
    unsigned workers;          /* I/O threads serving this disk; 0: the default (4) */
    bool untrusted;            /* the image is hostile: no backing file it names is opened... */
    const char *backing;       /* ...except this one, when it names one (whose own backing
                                * files are not followed); NULL: none */
    const char *backing_format; /* "raw", "qcow2" or NULL to probe (warned) */
    unsigned bootindex;        /* firmware boot priority (1 first); 0: by the boot order */
};

/* A read-only CD-ROM (virtio-scsi, target 0 LUN 0) with an ISO 9660 image. */
#define KVMBOX_MAX_CDROMS 4
struct kvmbox_cdrom {
    const char *path;
    unsigned bootindex;        /* as for disks */
};

/* Firmware boot order: device classes in the order they are tried. */
enum kvmbox_boot_dev {
    KVMBOX_BOOT_END = 0,
    KVMBOX_BOOT_DISK,
    KVMBOX_BOOT_CDROM,
    KVMBOX_BOOT_NET,           /* accepted; kvmbox has no network boot ROM (docs/firmware.md) */
};
#define KVMBOX_BOOT_MAX 4

/* A virtio-net NIC and the network behind it. */
enum kvmbox_net_mode {
    KVMBOX_NET_USER = 0,       /* NAT with DHCP and DNS (libslirp); no privileges */
    KVMBOX_NET_TAP,            /* an existing tap device: name */
    KVMBOX_NET_BRIDGE,         /* a new tap attached to the bridge name, removed at the end */
    KVMBOX_NET_SEGMENT,        /* an isolated L2 segment shared by VMs that give the same name */
};
#define KVMBOX_MAX_NICS 8
#define KVMBOX_MAX_HOSTFWD 16
struct kvmbox_nic {
    enum kvmbox_net_mode mode;
    const char *name;          /* tap, bridge or segment name (NULL for user) */
    bool have_mac;
    uint8_t mac[6];            /* else derived from the VM name and the NIC's index */
    unsigned nhostfwd;         /* user mode: "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT" */
    const char *hostfwd[KVMBOX_MAX_HOSTFWD];
};

struct kvmbox_result;

struct kvmbox_config {
    const char *kernel;        /* bzImage, ELF with a PVH note, or multiboot ELF */
    const char *initrd;        /* optional */
    const char *cmdline;       /* optional */
    uint64_t mem_size;         /* bytes; default 256 MiB */
    unsigned cpus;             /* default 1 */
    bool no_reboot;            /* guest reset ends the VM (status 0) instead of rebooting */
    unsigned timeout_secs;     /* 0: none; else the VM is stopped with KVMBOX_STOP_TIMEOUT */
    int console_in;            /* fd the guest's COM1 reads from; -1: no input */
    int console_out;           /* fd COM1 output goes to; -1: discarded */
    bool console_escape;       /* Ctrl-] on console_in ends the VM (KVMBOX_STOP_DETACH) */
    const char *name;          /* the VM's name (reported by the API); NULL: "vm" */
    const char *api_sock;      /* path of the control socket to create; NULL: none */
    const char *config_json;   /* the definition this VM was started from (dumpconfig) */
    unsigned ndisks;           /* disks, in PCI slot order */
    struct kvmbox_disk disks[KVMBOX_MAX_DISKS];
    unsigned nnics;            /* NICs, in PCI slot order after the disks */
    struct kvmbox_nic nics[KVMBOX_MAX_NICS];
    bool hugepages;            /* back RAM with huge pages (hugetlbfs, else transparent) */
    bool mem_overcommit;       /* allow more RAM than the host's RAM and swap (it is mapped
                                * lazily; the guest must not touch more than the host has) */
    bool no_balloon;           /* no virtio-balloon device (it is there by default) */
    bool no_sandbox;           /* run kvmbox's threads without their seccomp filters */
    const char *runtime_dir;   /* where segment sockets live; NULL: $XDG_RUNTIME_DIR/kvmbox,
                                * /run/kvmbox for root, else /tmp/kvmbox-UID (it must be the
                                * user's own directory, mode 0700: kvmbox refuses another's) */
    /* Run-time events the host should hear of (a disk found corrupt, failed I/O, warnings):
     * one line each, no newline, called from any of the VM's threads (possibly several at
     * once) while devices hold their locks, so it must not call back into the library.
     * Devices rate-limit what they send. NULL: the lines are dropped. */
    void (*log)(void *opaque, const char *line);
    void *log_opaque;
    /* Called once, on the thread in kvmbox_vm_run, when the VM has ended: before its control
     * socket is removed and "wait" requests are answered, so what it records (the CLI keeps
     * the exit status for `kvmbox wait` and `info`) is in place before anyone can see the VM
     * gone. NULL: nothing is called. */
    void (*on_end)(const struct kvmbox_result *res, void *opaque);
    void *on_end_opaque;
    /* Firmware boot (docs/firmware.md). With no kernel, the guest boots through a BIOS. */
    const char *firmware;      /* BIOS image, or "bios" (SeaBIOS); NULL: SeaBIOS when no kernel is
                                * given. "uefi" is refused (docs/firmware.md says why). */
    bool have_uuid;
    uint8_t uuid[16];          /* the VM's UUID (SMBIOS type 1), in RFC 4122 byte order */
    unsigned ncdroms;
    struct kvmbox_cdrom cdroms[KVMBOX_MAX_CDROMS];
    /* Classes in boot order, KVMBOX_BOOT_END-terminated; empty: disk, then cdrom. Classes
     * not named are tried after the named ones. boot_once, when not empty, is the order of
     * the first boot only (an installer's CD), boot_order that of every later one. */
    uint8_t boot_order[KVMBOX_BOOT_MAX + 1];
    uint8_t boot_once[KVMBOX_BOOT_MAX + 1];
    bool boot_menu;            /* the firmware offers its boot menu (ESC on the console) */
    /* Restore (docs/savestate.md): build the VM from the state saved in this file instead of
     * booting it. The rest of the configuration must be the one the VM was saved with. */
    const char *restore_path;  /* NULL: boot normally */
    bool restore_paused;       /* the restored VM stays paused until resumed */
    bool restore_prefault;     /* read all saved RAM before running (else it is mapped lazily) */
};

enum kvmbox_stop {
    KVMBOX_STOP_POWEROFF = 0,  /* ACPI S5 */
    KVMBOX_STOP_DEBUG_EXIT,    /* write to the isa-debug-exit port; code in debug_code */
    KVMBOX_STOP_RESET,         /* reset requested and no_reboot set */
    KVMBOX_STOP_PANIC,         /* pvpanic */
    KVMBOX_STOP_TIMEOUT,
    KVMBOX_STOP_DETACH,        /* console escape or kvmbox_vm_stop() */
    KVMBOX_STOP_ERROR,         /* kvmbox could not go on: message says why */
    KVMBOX_STOP_KILLED,        /* destroyed through the API (kvmbox kill) */
    KVMBOX_STOP_NO_BOOT,       /* the firmware found nothing to boot */
};

struct kvmbox_result {
    enum kvmbox_stop reason;
    uint32_t debug_code;       /* value written to the debug-exit port */
    int error;                 /* negative errno for KVMBOX_STOP_ERROR / setup failures */
    bool config_error;         /* the failure is the configuration's (bad kernel, sizes...) */
    char message[KVMBOX_MSG_MAX];
};

/* The documented process exit statuses. */
#define KVMBOX_EXIT_POWEROFF 0
#define KVMBOX_EXIT_USAGE    2
#define KVMBOX_EXIT_FAILURE  4
#define KVMBOX_EXIT_PANIC    6
#define KVMBOX_EXIT_NO_BOOT  8   /* the firmware found no bootable device */
#define KVMBOX_EXIT_TIMEOUT  124
#define KVMBOX_EXIT_KILLED   137

struct kvmbox_vm;

void kvmbox_config_init(struct kvmbox_config *cfg);

/* Validates CFG and builds the VM (KVM, memory, devices, firmware, kernel). Returns 0, or a
 * negative errno with RES->message naming the problem. Configuration mistakes (bad kernel
 * file, sizes, vCPU count) are -EINVAL/-ENOEXEC/-E2BIG/-ENOENT; host problems otherwise.
 * The VM's threads (vCPUs, devices, control socket) exist from here on; the vCPUs wait for
 * kvmbox_vm_run(). Block the signals you want to handle yourself before calling it. */
int kvmbox_vm_create(const struct kvmbox_config *cfg, struct kvmbox_vm **out,
                     struct kvmbox_result *res);
/* Runs until the guest stops (poweroff, debug-exit, panic, error, timeout, detach); reboots
 * are handled inside. Returns 0 with RES filled, or negative errno on failure to start. */
int kvmbox_vm_run(struct kvmbox_vm *vm, struct kvmbox_result *res);
/* Asks a running VM to stop from another thread (async-signal-unsafe; thread-safe). */
void kvmbox_vm_stop(struct kvmbox_vm *vm, enum kvmbox_stop reason);
void kvmbox_vm_destroy(struct kvmbox_vm *vm);
/* Pauses every vCPU (the guest's kvmclock does not leap on resume) / resumes them. */
int kvmbox_vm_pause(struct kvmbox_vm *vm);
int kvmbox_vm_resume(struct kvmbox_vm *vm);
/* Sets NIC's link (an index in the order of cfg.nics) up or down; the guest's driver is told
 * by a configuration interrupt. Returns 0, or -ENODEV for no such NIC. */
int kvmbox_vm_set_link(struct kvmbox_vm *vm, unsigned nic, bool up);
/* Presses the ACPI power button: a guest that handles it shuts down cleanly. */
void kvmbox_vm_power_button(struct kvmbox_vm *vm);
/* Resets the guest as the reset button would (reboots unless no_reboot). */
void kvmbox_vm_reset(struct kvmbox_vm *vm);
/* Saves the running VM's state to PATH (created, never overwritten; docs/savestate.md), from
 * another thread while kvmbox_vm_run runs: once saved, the VM stops (kvmbox_vm_run returns
 * with KVMBOX_STOP_DETACH and "saved to PATH"). Returns 0, or a negative errno with ERR set
 * (the VM then runs on). A saved VM is built again with kvmbox_config.restore_path. */
int kvmbox_vm_save(struct kvmbox_vm *vm, const char *path, char *err, size_t errlen);

/* create + run + destroy; returns the process exit status (see KVMBOX_EXIT_*): a failure to
 * create is 2 when RES->config_error is set, else 4. */
int kvmbox_run_config(const struct kvmbox_config *cfg, struct kvmbox_result *res);
/* Maps a result to the documented exit status: 0 poweroff/reset/detach, (code<<1)|1 for
 * debug-exit, 6 panic, 124 timeout, 137 killed, 4 error. */
int kvmbox_exit_status(const struct kvmbox_result *res);
const char *kvmbox_version(void);

#ifdef __cplusplus
}
#endif
#endif
