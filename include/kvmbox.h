/* libkvmbox: boot and run a KVM guest from a program.
 *
 *   struct kvmbox_config cfg;
 *   kvmbox_config_init(&cfg);
 *   cfg.kernel = "guest.elf";
 *   struct kvmbox_result res;
 *   int status = kvmbox_run_config(&cfg, &res);   // exit status as the CLI uses it
 *
 * Nothing here prints or exits: errors come back as negative errno with a one-line message
 * in the result, and what the VM has to say while it runs goes to kvmbox_config.log
 * (tests/t-layers.sh checks that the library calls no stdio output). The one exception: a
 * thread that breaks its seccomp sandbox ends the process with one line on fd 2. The
 * library owns no global mutable state; several VMs may run in one process (each
 * kvmbox_vm runs its vCPUs on threads of its own).
 */
#ifndef KVMBOX_H
#define KVMBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVMBOX_MAX_CMDLINE 4096
#define KVMBOX_MSG_MAX     512
#define KVMBOX_MAX_DISKS   16

/* A virtio-blk disk. */
struct kvmbox_disk {
    const char *path;           /* image file */
    const char *format;         /* "raw", "qcow2" or NULL to probe (raw is then warned about) */
    bool readonly;              /* the guest sees a read-only disk; the image is opened read-only */
    bool cache_none;            /* O_DIRECT on the image (cache=none); else the page cache */
    const char *serial;         /* reported to the guest by GET_ID (at most 20 bytes); NULL: none */
    unsigned workers;           /* I/O threads serving this disk; 0: the default (4) */
    bool untrusted;             /* the image is hostile: no backing file it names is opened... */
    const char *backing;        /* ...except this one, when it names one (whose own backing
                                * files are not followed); NULL: none */
    const char *backing_format; /* "raw", "qcow2" or NULL to probe (warned) */
    unsigned bootindex;         /* firmware boot priority (1 first); 0: by the boot order */
};

/* A read-only CD-ROM (virtio-scsi, target 0 LUN 0) with an ISO 9660 image. */
#define KVMBOX_MAX_CDROMS 4
struct kvmbox_cdrom {
    const char *path;
    unsigned bootindex; /* as for disks */
};

/* Firmware boot order: device classes in the order they are tried. */
enum kvmbox_boot_dev {
    KVMBOX_BOOT_END = 0,
    KVMBOX_BOOT_DISK,
    KVMBOX_BOOT_CDROM,
    KVMBOX_BOOT_NET, /* accepted; kvmbox has no network boot ROM (docs/firmware.md) */
};
#define KVMBOX_BOOT_MAX 4

/* A virtio-net NIC and the network behind it. */
enum kvmbox_net_mode {
    KVMBOX_NET_USER = 0, /* NAT with DHCP and DNS (libslirp); no privileges */
    KVMBOX_NET_TAP,      /* an existing tap device: name */
    KVMBOX_NET_BRIDGE,   /* a new tap attached to the bridge name, removed at the end */
    KVMBOX_NET_SEGMENT,  /* an isolated L2 segment shared by VMs that give the same name */
};
#define KVMBOX_MAX_NICS    8
#define KVMBOX_MAX_HOSTFWD 16
struct kvmbox_nic {
    enum kvmbox_net_mode mode;
    const char *name; /* tap, bridge or segment name (NULL for user) */
    bool have_mac;
    uint8_t mac[6];    /* else derived from the VM name and the NIC's index */
    unsigned nhostfwd; /* user mode: "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT" */
    const char *hostfwd[KVMBOX_MAX_HOSTFWD];
};

struct kvmbox_result;

struct kvmbox_config {
    const char *kernel;      /* bzImage, ELF with a PVH note, or multiboot ELF */
    const char *initrd;      /* optional */
    const char *cmdline;     /* optional */
    uint64_t mem_size;       /* bytes; default 256 MiB */
    unsigned cpus;           /* default 1 */
    bool no_reboot;          /* guest reset ends the VM (status 0) instead of rebooting */
    unsigned timeout_secs;   /* 0: none; else the VM is stopped with KVMBOX_STOP_TIMEOUT */
    int console_in;          /* fd the guest's COM1 reads from; -1: no input */
    int console_out;         /* fd COM1 output goes to; -1: discarded */
    bool console_escape;     /* Ctrl-] on console_in ends the VM (KVMBOX_STOP_DETACH) */
    const char *name;        /* the VM's name (reported by the API); NULL: "vm" */
    const char *api_sock;    /* path of the control socket to create; NULL: none */
    const char *config_json; /* the definition this VM was started from (dumpconfig) */
    unsigned ndisks;         /* disks, in PCI slot order */
    struct kvmbox_disk disks[KVMBOX_MAX_DISKS];
    unsigned nnics; /* NICs, in PCI slot order after the disks */
    struct kvmbox_nic nics[KVMBOX_MAX_NICS];
    bool hugepages;          /* back RAM with huge pages (hugetlbfs, else transparent) */
    bool mem_overcommit;     /* allow more RAM than the host's RAM and swap (it is mapped
                                * lazily; the guest must not touch more than the host has) */
    bool no_balloon;         /* no virtio-balloon device (it is there by default) */
    bool no_sandbox;         /* run kvmbox's threads without their seccomp filters */
    const char *runtime_dir; /* where segment sockets live; NULL: $XDG_RUNTIME_DIR/kvmbox,
                                * /run/kvmbox for root, else /tmp/kvmbox-UID (it must be the
                                * user's own directory, mode 0700: kvmbox refuses another's) */
    /* Run-time events the host should hear of (a disk found corrupt, failed I/O, a broken
     * virtqueue, the user network's guest errors, warnings, a hugepages fallback note): one
     * line each, no newline, called from any of the VM's threads (possibly several at once)
     * while devices hold their locks, so it must not call back into the library.
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
    const char *firmware; /* BIOS image, or "bios" (SeaBIOS); NULL: SeaBIOS when no kernel is
                                * given. "uefi" is refused (docs/firmware.md says why). */
    bool have_uuid;
    uint8_t uuid[16]; /* the VM's UUID (SMBIOS type 1), in RFC 4122 byte order */
    unsigned ncdroms;
    struct kvmbox_cdrom cdroms[KVMBOX_MAX_CDROMS];
    /* Classes in boot order, KVMBOX_BOOT_END-terminated; empty: disk, then cdrom. Classes
     * not named are tried after the named ones. boot_once, when not empty, is the order of
     * the first boot only (an installer's CD), boot_order that of every later one. */
    uint8_t boot_order[KVMBOX_BOOT_MAX + 1];
    uint8_t boot_once[KVMBOX_BOOT_MAX + 1];
    bool boot_menu; /* the firmware offers its boot menu (ESC on the console) */
    /* Restore (docs/savestate.md): build the VM from the state saved in this file instead of
     * booting it. The rest of the configuration must be the one the VM was saved with, but
     * for the name and the NICs' MACs (a restored driver is told a MAC that changed). */
    const char *restore_path; /* NULL: boot normally */
    int restore_fd;           /* or the state file as an open fd (-1, kvmbox_config_init: none).
                                * It must be a regular file: guest RAM is mapped MAP_PRIVATE from
                                * it (VMs restored from one file share its page cache); a pipe or
                                * socket is refused (-EINVAL). The library keeps a duplicate while
                                * it needs one: the caller may close it after kvmbox_vm_create. */
    bool restore_paused;      /* the restored VM stays paused until resumed */
    bool restore_prefault;    /* read all saved RAM before running (else it is mapped lazily) */
    /* The disks were just reverted to the qcow2 internal snapshots taken with this state
     * (`kvmbox snapshot revert`): their paths are checked, not their fingerprints. */
    bool restore_disks_reverted;
};

enum kvmbox_stop {
    KVMBOX_STOP_POWEROFF = 0, /* ACPI S5 */
    KVMBOX_STOP_DEBUG_EXIT,   /* write to the isa-debug-exit port; code in debug_code */
    KVMBOX_STOP_RESET,        /* reset requested and no_reboot set */
    KVMBOX_STOP_PANIC,        /* pvpanic */
    KVMBOX_STOP_TIMEOUT,
    KVMBOX_STOP_DETACH,  /* console escape or kvmbox_vm_stop() */
    KVMBOX_STOP_ERROR,   /* kvmbox could not go on: message says why */
    KVMBOX_STOP_KILLED,  /* destroyed through the API (kvmbox kill) */
    KVMBOX_STOP_NO_BOOT, /* the firmware found nothing to boot */
};

struct kvmbox_result {
    enum kvmbox_stop reason;
    uint32_t debug_code; /* value written to the debug-exit port */
    int error;           /* negative errno for KVMBOX_STOP_ERROR / setup failures */
    bool config_error;   /* the failure is the configuration's (bad kernel, sizes...) */
    char message[KVMBOX_MSG_MAX];
};

/* The documented process exit statuses. */
#define KVMBOX_EXIT_POWEROFF 0
#define KVMBOX_EXIT_USAGE    2
#define KVMBOX_EXIT_FAILURE  4
#define KVMBOX_EXIT_PANIC    6
#define KVMBOX_EXIT_NO_BOOT  8 /* the firmware found no bootable device */
#define KVMBOX_EXIT_TIMEOUT  124
#define KVMBOX_EXIT_KILLED   137

struct kvmbox_vm;

void kvmbox_config_init(struct kvmbox_config *cfg);

/* Validates CFG and builds the VM (KVM, memory, devices, firmware, kernel). Returns 0, or a
 * negative errno with RES->message naming the problem. Configuration mistakes (bad kernel
 * file, sizes, vCPU count) are -EINVAL/-ENOEXEC/-E2BIG/-ENOENT; host problems otherwise.
 * The VM's threads (vCPUs, devices, control socket) exist from here on; the vCPUs wait for
 * kvmbox_vm_run(). Block the signals you want to handle yourself before calling it. */
int kvmbox_vm_create(const struct kvmbox_config *cfg, struct kvmbox_vm **out, struct kvmbox_result *res);
/* Runs until the guest stops (poweroff, debug-exit, panic, error, timeout, detach); reboots
 * are handled inside. Returns 0 with RES filled, or negative errno on failure to start. */
int kvmbox_vm_run(struct kvmbox_vm *vm, struct kvmbox_result *res);
/* Asks a running VM to stop from another thread (async-signal-unsafe; thread-safe). */
void kvmbox_vm_stop(struct kvmbox_vm *vm, enum kvmbox_stop reason);
void kvmbox_vm_destroy(struct kvmbox_vm *vm);
/* The five calls below are thread-safe, as is the block "Watching and steering a VM".
 * Pauses every vCPU (the guest's kvmclock does not leap on resume) / resumes them: 0, or
 * -ESHUTDOWN when the VM is stopping. Pausing a paused VM, or resuming a running one, is 0. */
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
/* The same, to FD: an empty regular file (written from its start, pages of zeroes left as
 * holes; refused with -EEXIST when it is not empty or in append mode), or a pipe or socket
 * (written in order, zero pages included: a stream to store in a file, since a restore maps
 * a file). FD stays the caller's; on failure what was written is not undone. */
int kvmbox_vm_save_fd(struct kvmbox_vm *vm, int fd, char *err, size_t errlen);
/* kvmbox_vm_create for a copy of a saved VM: SAVED is the configuration it was saved with,
 * with restore_path or restore_fd set; the copy is named NAME and each of its NICs gets the
 * MAC derived from NAME (an explicit mac is dropped: copies must not share one), has no
 * control socket and no saved definition (config_json). Any number of copies may run from
 * one file at once: their RAM maps it privately, sharing its page cache until written. */
int kvmbox_vm_clone(const struct kvmbox_config *saved, const char *name, struct kvmbox_vm **out,
                    struct kvmbox_result *res);

/* Whole-VM snapshots (docs/savestate.md, "Snapshots"), called like kvmbox_vm_save. KIND
 * "full": a qcow2 internal snapshot NAME of every writable qcow2 disk and the VM's state
 * written to STATE_PATH (absolute, created, never overwritten); "disk": the internal
 * snapshots only; "memory": the state only. The VM is paused for it, its I/O in flight
 * finished and its disks flushed, and it runs on afterwards (a paused VM stays paused).
 * Read-only disks are left alone. Refused (-EINVAL) with a raw disk unless KIND is "memory", and when a disk already
 * has a snapshot NAME. Returns 0, or a negative errno with ERR set and nothing changed. */
int kvmbox_vm_snapshot_create(struct kvmbox_vm *vm, const char *name, const char *kind,
                              const char *state_path, char *err, size_t errlen);
/* Deletes the internal snapshot NAME of every writable qcow2 disk of the running VM (its
 * clusters are freed); -ENOENT with ERR set, nothing deleted, when a disk lacks it. */
int kvmbox_vm_snapshot_delete(struct kvmbox_vm *vm, const char *name, char *err, size_t errlen);

/* ---- Watching and steering a VM: what the control socket (docs/api.md) does --------------
 * Every function in this block is thread-safe: call it from any thread, while kvmbox_vm_run()
 * runs on another, before it or after it returned, until kvmbox_vm_destroy(). None prints.
 * Only kvmbox_vm_pause() waits (for the vCPUs to leave the guest); the others return at once.
 * Device indexes count in the order of cfg.disks, cfg.cdroms and cfg.nics from 0.
 * Waiting for the end is waiting for kvmbox_vm_run() to return (run it on a thread of your
 * own and join that); kvmbox_vm_result() tells other threads whether the VM is ending. */

enum kvmbox_state {
    KVMBOX_STATE_RUNNING = 0,
    KVMBOX_STATE_PAUSED,
    KVMBOX_STATE_REBOOTING, /* a reset is being served */
    KVMBOX_STATE_STOPPING,  /* a stop was requested (or the VM has ended) */
};

struct kvmbox_status {
    enum kvmbox_state state;
    uint64_t uptime_ns;    /* since kvmbox_vm_create() */
    unsigned reboots;      /* guest resets served so far */
    unsigned cpus;         /* vCPUs */
    uint64_t mem_size;     /* guest RAM, bytes */
    const char *hugepages; /* how RAM is backed: "hugetlbfs", "transparent" or "off" */
};
/* Fills ST. Returns 0. */
int kvmbox_vm_status(struct kvmbox_vm *vm, struct kvmbox_status *st);
/* The configuration the VM was created with, defaults filled in (name, cmdline, the firmware
 * image chosen); its strings are the VM's own copies. Valid until kvmbox_vm_destroy(). */
const struct kvmbox_config *kvmbox_vm_config(struct kvmbox_vm *vm);

struct kvmbox_disk_status {
    char format[16];    /* as opened: "raw" or "qcow2" */
    unsigned pci_slot;  /* on bus 0 */
    uint64_t size;      /* bytes the guest sees */
    bool corrupt;       /* found corrupt at run time: its I/O fails */
    uint64_t io_errors; /* requests that failed on the host */
};
/* Returns 0, or -ENODEV for no such disk. */
int kvmbox_vm_disk_status(struct kvmbox_vm *vm, unsigned disk, struct kvmbox_disk_status *st);

struct kvmbox_cdrom_status {
    unsigned pci_slot;
    uint64_t size;
};
/* Returns 0, or -ENODEV for no such CD-ROM. */
int kvmbox_vm_cdrom_status(struct kvmbox_vm *vm, unsigned cdrom, struct kvmbox_cdrom_status *st);

struct kvmbox_nic_status {
    uint8_t mac[6];
    unsigned pci_slot;
    char backend[160]; /* the backend in words, with the host ports hostfwd bound */
    bool link_up;
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
};
/* Returns 0, or -ENODEV for no such NIC. */
int kvmbox_vm_nic_status(struct kvmbox_vm *vm, unsigned nic, struct kvmbox_nic_status *st);

struct kvmbox_balloon_status {
    uint64_t target;          /* guest memory the host asks for, bytes */
    uint64_t actual;          /* guest memory the guest says it holds, bytes */
    uint64_t released;        /* bytes given back to the host (inflation and reports) */
    uint64_t reported;        /* of which by free page reporting */
    unsigned stats_interval;  /* seconds between statistics requests; 0: none */
    bool free_page_reporting; /* the driver accepted it */
    uint64_t stats_age_ms;    /* since the guest last sent statistics; UINT64_MAX: never */
    /* The guest's last statistics, -1 for those it did not send. */
    int64_t swap_in, swap_out, major_faults, minor_faults, free, total, available, caches;
};
/* Returns 0, or -ENODEV when the VM has no balloon (cfg.no_balloon). */
int kvmbox_vm_balloon_status(struct kvmbox_vm *vm, struct kvmbox_balloon_status *st);
/* Asks the guest to hold BYTES of memory. Returns 0, -ENODEV (no balloon) or -ERANGE (below
 * the minimum or above guest memory); MSG (MSGLEN bytes, may be NULL) then gets one line. */
int kvmbox_vm_set_balloon_target(struct kvmbox_vm *vm, uint64_t bytes, char *msg, size_t msglen);
/* How often the guest is asked for statistics: 0 (never) to 86400 s. Returns 0, -ENODEV or
 * -EINVAL. */
int kvmbox_vm_set_balloon_stats_interval(struct kvmbox_vm *vm, unsigned secs);

/* Like the reset button, but clean: presses the power button, and the poweroff that follows
 * boots the guest again instead of ending the VM (virsh reboot in ACPI mode). */
void kvmbox_vm_reboot(struct kvmbox_vm *vm);
/* kvmbox_vm_stop() with MESSAGE as the result's message (what `wait` reports). */
void kvmbox_vm_stop_with(struct kvmbox_vm *vm, enum kvmbox_stop reason, const char *message);
/* Once a stop was requested (the VM is ending or has ended): copies its result to RES and
 * returns 0; before that, -EBUSY. */
int kvmbox_vm_result(struct kvmbox_vm *vm, struct kvmbox_result *res);

/* The guest's COM1 as a stream that any number of readers follow. The VM keeps the last
 * 256 KiB of output; a reader keeps its own position (bytes since the VM started) and reads
 * from it: what was overwritten before it got there is skipped. */
/* An eventfd that becomes readable when output arrives while a reader is attached (the
 * caller reads it to clear it; it stays the VM's). Without attached readers output does not
 * touch it. */
int kvmbox_vm_console_fd(struct kvmbox_vm *vm);
/* Counts a reader in or out: while any is in, output wakes kvmbox_vm_console_fd(). */
void kvmbox_vm_console_attach(struct kvmbox_vm *vm);
void kvmbox_vm_console_detach(struct kvmbox_vm *vm);
/* Copies up to LEN bytes of output from *POS on into BUF and advances *POS (past what was
 * lost, too). Returns the bytes copied; 0 when the reader is up to date. */
size_t kvmbox_vm_console_read(struct kvmbox_vm *vm, uint64_t *pos, void *buf, size_t len);
/* The output position a reader that wants only new output starts from. */
uint64_t kvmbox_vm_console_end(struct kvmbox_vm *vm);
/* Feeds BUF to COM1 as typed input. Returns the bytes the UART took (its FIFO may be full:
 * send the rest when the guest has read some). */
size_t kvmbox_vm_console_write(struct kvmbox_vm *vm, const void *buf, size_t len);

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
