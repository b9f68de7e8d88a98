/* Whole-VM snapshots of a running VM (vmm/snapshot.h, docs/savestate.md "Snapshots").
 *
 * The VM holds its images open and locked, so their qcow2 internal snapshots are taken (and
 * deleted) here, through the block layer's open handles, on the VM's main thread (which may
 * create the state file; the API thread is sandboxed): the vCPUs are paused with their last
 * I/O completed, every device finishes its I/O in flight (its save; virtio-blk also flushes
 * its image), the snapshots are taken and the state written, and then the devices and the
 * vCPUs go on. A failure undoes what was done: the VM is as it was. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "vmm/snapshot.h"
#include "vmm/state.h"
#include "vmm/vm.h"

struct vm_snap_req {
    bool create;
    const char *name;
    enum vm_snap_kind kind;
    const char *state_path;
    bool done;
    int result;
    char err[KVMBOX_MSG_MAX];
};

/* The image of disk I when it takes part in snapshots (writable qcow2); NULL otherwise. */
static struct blk *snap_image(struct vm *vm, unsigned i)
{
    if (vm->cfg.disks[i].readonly || strcmp(vm->disk_info[i].format, "qcow2") || !vm->disk_info[i].dev)
        return NULL;
    return vblk_image(vm->disk_info[i].dev);
}

static bool has_snapshot(struct blk *b, const char *name)
{
    int n = blk_snapshot_list(b, NULL, 0);
    if (n <= 0)
        return false;
    struct blk_snapshot *s = calloc((size_t)n, sizeof(*s));
    if (!s)
        return false;
    n = blk_snapshot_list(b, s, n);
    bool found = false;
    for (int i = 0; i < n && !found; i++)
        found = !strcmp(s[i].name, name);
    free(s);
    return found;
}

/* What create and delete may do at all, checked before the VM is paused. */
static int snap_check(struct vm *vm, const struct vm_snap_req *q, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->cfg.ndisks; i++) {
        const char *path = vm->cfg.disks[i].path;
        if (q->create && q->kind != VM_SNAP_MEMORY && strcmp(vm->disk_info[i].format, "qcow2"))
            return errf(err, errlen, -EINVAL,
                        "disk %s is %s: it cannot hold a snapshot (only qcow2 "
                        "can; --memory-only leaves the disks alone)",
                        path, vm->disk_info[i].format);
        struct blk *b = snap_image(vm, i);
        if (!b || (q->create && q->kind == VM_SNAP_MEMORY))
            continue;
        bool has = has_snapshot(b, q->name);
        if (q->create && has)
            return errf(err, errlen, -EEXIST, "disk %s already has an internal snapshot named %s", path,
                        q->name);
        if (!q->create && !has)
            return errf(err, errlen, -ENOENT,
                        "disk %s has no internal snapshot named %s (it changed "
                        "since the snapshot was taken)",
                        path, q->name);
    }
    return 0;
}

/* Creates (or deletes) the internal snapshot on every snapshot disk; a create that fails
 * part way deletes the ones it made. */
static int snap_disks(struct vm *vm, const struct vm_snap_req *q, char *err, size_t errlen)
{
    unsigned done = 0;
    int r = 0;
    for (; done < vm->cfg.ndisks; done++) {
        struct blk *b = snap_image(vm, done);
        if (!b)
            continue;
        r = q->create ? blk_snapshot_create(b, q->name) : blk_snapshot_delete(b, q->name);
        if (r < 0) {
            errf(err, errlen, r, "disk %s: %s", vm->cfg.disks[done].path,
                 *blk_errmsg(b) ? blk_errmsg(b) : strerror(-r));
            break;
        }
        if ((r = blk_flush(b)) < 0) {
            errf(err, errlen, r, "disk %s: flush: %s", vm->cfg.disks[done].path, strerror(-r));
            done++;
            break;
        }
    }
    if (r < 0 && q->create)
        for (unsigned i = 0; i < done; i++)
            if (snap_image(vm, i))
                (void)blk_snapshot_delete(snap_image(vm, i), q->name);
    return r;
}

/* The VM paused and its devices stopped: the snapshot itself. */
static int snap_paused(struct vm *vm, const struct vm_snap_req *q, int fd, char *err, size_t errlen)
{
    int r;
    bool disks = q->create ? q->kind != VM_SNAP_MEMORY : true;
    if (fd >= 0) {
        /* The state first (its device sections drain the I/O), then the disks: the state
         * describes the disks as they are in the snapshot. */
        if ((r = vm_save_to_fd(vm, fd, err, errlen)) < 0)
            return r;
    } else {
        struct st_writer w; /* only to drain the devices: the sections are dropped */
        st_writer_init(&w);
        r = vm_save_devices(vm, &w, err, errlen);
        st_writer_free(&w);
        if (r < 0)
            return r;
    }
    return disks ? snap_disks(vm, q, err, errlen) : 0;
}

static int snap_serve(struct vm *vm, const struct vm_snap_req *q, char *err, size_t errlen)
{
    if (vm_stopping(vm))
        return errf(err, errlen, -EBUSY, "the VM is stopping or rebooting");
    int r = snap_check(vm, q, err, errlen);
    if (r < 0)
        return r;
    int fd = -1;
    if (q->create && q->kind != VM_SNAP_DISK) {
        fd = open(q->state_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return errf(err, errlen, -errno, "%s: %s", q->state_path, strerror(errno));
    }
    pthread_mutex_lock(&vm->lock);
    bool was_paused = vm->paused;
    pthread_mutex_unlock(&vm->lock);
    r = vm_pause_settled(vm);
    pthread_mutex_lock(&vm->lock);
    bool parked = vm->vcpus_parked == vm->ncpus && !vm->stop_requested && !vm->reset_requested;
    pthread_mutex_unlock(&vm->lock);
    if (r < 0 && parked)
        r = errf(err, errlen, r, "completing the vCPUs' last I/O: %s", strerror(-r));
    else if (r < 0 || !parked)
        r = errf(err, errlen, r < 0 ? r : -EBUSY, "the VM is stopping or rebooting");
    else
        r = snap_paused(vm, q, fd, err, errlen);
    if (fd >= 0) {
        close(fd);
        if (r < 0)
            unlink(q->state_path);
    }
    /* The devices the save stopped take up their I/O again (a snapshot does not end the VM). */
    for (unsigned i = 0; i < vm->ndevices && parked; i++)
        if (vm->devices[i].save_failed)
            vm->devices[i].save_failed(vm->devices[i].dev);
    if (!was_paused)
        vm_resume(vm);
    return r;
}

int vm_snapshot_request(struct vm *vm, bool create, const char *name, enum vm_snap_kind kind,
                        const char *state_path, char *err, size_t errlen)
{
    struct vm_snap_req req = { .create = create, .name = name, .kind = kind, .state_path = state_path };
    pthread_mutex_lock(&vm->lock);
    if (vm->save_req || vm->snap_req || vm->stop_requested) {
        pthread_mutex_unlock(&vm->lock);
        return errf(err, errlen, -EBUSY,
                    vm->stop_requested ? "the VM is stopping" : "a save or snapshot is already in progress");
    }
    vm->snap_req = &req;
    pthread_cond_broadcast(&vm->cond);
    while (!req.done)
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    if (req.result < 0)
        snprintf(err, errlen, "%s", req.err);
    return req.result;
}

bool vm_snapshot_serve(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    struct vm_snap_req *req = vm->snap_req;
    pthread_mutex_unlock(&vm->lock);
    if (!req)
        return false;
    int r = snap_serve(vm, req, req->err, sizeof(req->err));
    pthread_mutex_lock(&vm->lock);
    req->result = r;
    req->done = true;
    vm->snap_req = NULL;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return true;
}

void vm_snapshot_cancel(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    struct vm_snap_req *req = vm->snap_req;
    if (req) {
        req->result = -ESHUTDOWN;
        snprintf(req->err, sizeof(req->err), "the VM ended before the snapshot could be taken");
        req->done = true;
        vm->snap_req = NULL;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

/* ---- the public calls (include/kvmbox.h) ------------------------------------------------ */

int kvmbox_vm_snapshot_create(struct kvmbox_vm *k, const char *name, const char *kind, const char *state_path,
                              char *err, size_t errlen)
{
    enum vm_snap_kind kd;
    if (!name || !*name || strlen(name) > 200)
        return errf(err, errlen, -EINVAL, "a snapshot needs a name (at most 200 bytes)");
    if (!kind || !strcmp(kind, "full"))
        kd = VM_SNAP_FULL;
    else if (!strcmp(kind, "disk"))
        kd = VM_SNAP_DISK;
    else if (!strcmp(kind, "memory"))
        kd = VM_SNAP_MEMORY;
    else
        return errf(err, errlen, -EINVAL, "snapshot kind must be full, disk or memory, not %.40s", kind);
    if (kd != VM_SNAP_DISK) {
        if (!state_path || state_path[0] != '/')
            return errf(err, errlen, -EINVAL, "the state file must be an absolute path");
    }
    return vm_snapshot_request(&k->vm, true, name, kd, kd == VM_SNAP_DISK ? NULL : state_path, err, errlen);
}

int kvmbox_vm_snapshot_delete(struct kvmbox_vm *k, const char *name, char *err, size_t errlen)
{
    if (!name || !*name)
        return errf(err, errlen, -EINVAL, "a snapshot needs a name");
    return vm_snapshot_request(&k->vm, false, name, VM_SNAP_DISK, NULL, err, errlen);
}
