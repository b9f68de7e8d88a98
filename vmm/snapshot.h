/* Saving a running VM to a file and building a VM from one (docs/savestate.md).
 *
 * Save runs on the thread in kvmbox_vm_run (it is not sandboxed: it opens the file); the API
 * thread hands it the request (vm_save_request) and waits. Restore is part of
 * kvmbox_vm_create when kvmbox_config.restore_path or restore_fd is set: the file is parsed first
 * (vm_restore_open), RAM is mapped from it copy-on-write instead of the anonymous mapping
 * (vm_restore_ram), the kernel is not loaded, and once the vCPUs exist KVM's and the devices'
 * state is loaded (vm_restore_apply). */
#ifndef KVMBOX_SNAPSHOT_H
#define KVMBOX_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct vm;
struct st_writer;
struct st_file;
struct st_section;

/* A device's part of the saved state: SAVE puts its fields (the section is opened and closed
 * for it; the VM is paused and the device's I/O drained), LOAD takes them back from its
 * section (the VM not running yet) and returns 0 or a negative errno with ERR set. The
 * section is named after the device (vm_add_device's name, '-' as '_') and numbered among
 * devices of that name in creation order; VERSION is checked on load. */
typedef int (*vm_save_fn)(void *dev, struct st_writer *w);
typedef int (*vm_load_fn)(void *dev, const struct st_section *s, char *err, size_t errlen);
void vm_device_on_save(struct vm *vm, void *dev, unsigned version, vm_save_fn save, vm_load_fn load);
/* SAVE_FAILED (may be NULL) is called when a save that called SAVE failed later: a device that
 * stopped its I/O for the save takes it up again. */
void vm_device_on_save_failed(struct vm *vm, void *dev, void (*save_failed)(void *dev));

/* From the API thread: asks the VM's main thread to save the VM to PATH (created, never
 * overwritten) or, PATH NULL, to FD (an empty regular file, a pipe or a socket), waits for
 * it, and returns 0 (the VM is then stopping) or a negative errno with ERR set (the VM runs
 * on as before). */
int vm_save_request(struct vm *vm, const char *path, int fd, char *err, size_t errlen) MUST_CHECK;
/* The main thread's side: serves a pending save request; true when there was one. */
bool vm_save_serve(struct vm *vm);
/* Fails a pending request (the VM ended before it was served). */
void vm_save_cancel(struct vm *vm);

/* Restore steps, in kvmbox_vm_create's order (each returns 0 or a negative errno with ERR). */
int vm_restore_open(struct vm *vm, char *err, size_t errlen) MUST_CHECK;
/* Once the firmware file is loaded: the image must be the one saved with (vmm/boot_firmware.h),
 * and the guest's view of it is filled in. A VM without firmware checks that none was saved. */
int vm_restore_firmware(struct vm *vm, char *err, size_t errlen) MUST_CHECK;
int vm_restore_ram(struct vm *vm, char *err, size_t errlen) MUST_CHECK;
int vm_restore_apply(struct vm *vm, char *err, size_t errlen) MUST_CHECK;
void vm_restore_free(struct vm *vm);
/* A guest reset of a restored VM: RAM mapped from the state file becomes anonymous memory
 * again (discarding a private file mapping would bring the saved pages back, not zeroes).
 * Called with the KVM VM torn down. */
int vm_restore_ram_release(struct vm *vm) MUST_CHECK;

/* For whole-VM snapshots (vmm/vm_snapshot.c): pause the vCPUs with their last I/O completed;
 * let every device finish its I/O in flight and write its section into W (a device then
 * stays stopped until its save_failed callback runs); the whole state into FD as
 * vm_save_request does, without stopping the VM. Each returns 0 or a negative errno (with ERR
 * set where it takes one). */
int vm_pause_settled(struct vm *vm) MUST_CHECK;
int vm_save_devices(struct vm *vm, struct st_writer *w, char *err, size_t errlen) MUST_CHECK;
int vm_save_to_fd(struct vm *vm, int fd, char *err, size_t errlen) MUST_CHECK;

/* vmm/vm_snapshot.c: whole-VM snapshots of a running VM (docs/savestate.md, "Snapshots").
 * From the API thread, served by the VM's main thread like a save; each returns 0 or a
 * negative errno with ERR set, and the VM runs on (or stays paused) either way. */
enum vm_snap_kind { VM_SNAP_FULL, VM_SNAP_DISK, VM_SNAP_MEMORY };
int vm_snapshot_request(struct vm *vm, bool create, const char *name, enum vm_snap_kind kind,
                        const char *state_path, char *err, size_t errlen) MUST_CHECK;
bool vm_snapshot_serve(struct vm *vm);
void vm_snapshot_cancel(struct vm *vm);

/* vmm/vcpu_state.c: what KVM holds. */
int vcpus_state_save(struct vm *vm, struct st_writer *w, char *err, size_t errlen) MUST_CHECK;
int vcpus_state_load(struct vm *vm, struct st_file *f, char *err, size_t errlen) MUST_CHECK;
int kvm_state_save(struct vm *vm, struct st_writer *w, char *err, size_t errlen) MUST_CHECK;
int kvm_state_load(struct vm *vm, struct st_file *f, char *err, size_t errlen) MUST_CHECK;

/* A disk's fingerprint as the saved state records it: size and modification time of the
 * image file (and of nothing it refers to). Returns 0 or a negative errno. */
int disk_fingerprint(const char *path, uint64_t *size, uint64_t *mtime_ns) MUST_CHECK;

#endif
