/* Per-thread seccomp allow-lists (libseccomp). Each thread kvmbox starts for a running VM
 * enters its class's sandbox once its setup is done; from then on a system call outside the
 * list stops the whole VM with one line naming the thread class and the call's number. The
 * main thread (which builds and rebuilds the machine) is not filtered. */
#ifndef KVMBOX_SANDBOX_H
#define KVMBOX_SANDBOX_H

#include <stdbool.h>

enum sandbox_class {
    SANDBOX_VCPU,    /* KVM_RUN and the device models behind PIO/MMIO exits */
    SANDBOX_API,     /* the control socket */
    SANDBOX_CONSOLE, /* terminal input to the serial port */
    SANDBOX_BLK,     /* virtio-blk queue thread and workers: image files, io_uring */
    SANDBOX_NET,     /* virtio-net I/O thread with its backend (tap, segment, the user net helper's socket) */
    SANDBOX_BALLOON, /* virtio-balloon: returns pages to the host */
    SANDBOX_SIGNAL,  /* `kvmbox run`'s thread that turns SIGTERM/SIGINT/SIGHUP into a stop */
    SANDBOX_LOG,     /* a daemonized VM's log writer: appends to NAME.log, rotates it */
    SANDBOX_CLASSES
};

/* Names the calling thread's class and installs its filter when ON. Returns 0 or a negative
 * errno (the thread then runs unfiltered and the caller reports it). */
int sandbox_enter(enum sandbox_class cls, bool on);
const char *sandbox_class_name(enum sandbox_class cls);

/* For the test of the sandbox itself: when the environment variable KVMBOX_SANDBOX_SELFTEST
 * names CLASS, the thread makes a forbidden call right after entering: it must stop the VM
 * when the filter is on, and go through when it is off. */
void sandbox_selftest(enum sandbox_class cls);

#endif
