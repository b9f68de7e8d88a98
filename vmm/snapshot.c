/* Save a running VM to a file, and build a VM from one (vmm/snapshot.h, docs/savestate.md). */
#include "vmm/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/state.h"
#include "vmm/vm.h"

#define VM_SECTION_VERSION 1
#define DEVICE_SECTION_MAX 64

struct vm_save_req {
    const char *path; /* NULL: saved to fd */
    int fd;
    bool done;
    int result;
    char err[KVMBOX_MSG_MAX];
};

struct vm_restore {
    char *path; /* the file, or "fd N" (for messages) */
    int fd;
    uint8_t *meta; /* header and sections, read into memory */
    struct st_file file;
};

void vm_device_on_save(struct vm *vm, void *dev, unsigned version, vm_save_fn save, vm_load_fn load)
{
    for (unsigned i = 0; i < vm->ndevices; i++)
        if (vm->devices[i].dev == dev) {
            vm->devices[i].save = save;
            vm->devices[i].load = load;
            vm->devices[i].state_version = version;
        }
}

void vm_device_on_save_failed(struct vm *vm, void *dev, void (*save_failed)(void *dev))
{
    for (unsigned i = 0; i < vm->ndevices; i++)
        if (vm->devices[i].dev == dev)
            vm->devices[i].save_failed = save_failed;
}

/* Device I's section: its name with '-' as '_', and its number among devices of that name. */
static void device_section(const struct vm *vm, unsigned i, char *name, uint32_t *instance)
{
    snprintf(name, ST_NAME_MAX + 1, "%s", vm->devices[i].name);
    for (char *p = name; *p; p++)
        if (*p == '-')
            *p = '_';
    *instance = 0;
    for (unsigned j = 0; j < i; j++)
        if (!strcmp(vm->devices[j].name, vm->devices[i].name))
            (*instance)++;
}

int disk_fingerprint(const char *path, uint64_t *size, uint64_t *mtime_ns)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    *mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec;
    return 0;
}

/* What size and mtime miss: a file put in the image's place (another inode) and a write or
 * copy that set the old mtime again (`cp -p`, `touch -r`: the change time cannot be set). */
static int disk_identity(const char *path, uint64_t *ino, uint64_t *ctime_ns)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *ino = (uint64_t)st.st_ino;
    *ctime_ns = (uint64_t)st.st_ctim.tv_sec * 1000000000ULL + (uint64_t)st.st_ctim.tv_nsec;
    return 0;
}

/* ---- save ----------------------------------------------------------------------------- */

static int save_vm_section(struct vm *vm, struct st_writer *w, char *err, size_t errlen)
{
    st_begin(w, "vm", 0, VM_SECTION_VERSION);
    st_put_str(w, "kvmbox", KVMBOX_VERSION);
    st_put_str(w, "name", vm->name);
    st_put_u32(w, "cpus", vm->ncpus);
    st_put_u64(w, "mem", vm->cfg.mem_size);
    st_put_str(w, "config", vm->cfg.config_json ? vm->cfg.config_json : "{}");
    st_put_u32(w, "disks", vm->cfg.ndisks);
    st_end(w);
    for (unsigned i = 0; i < vm->cfg.ndisks; i++) {
        uint64_t size = 0, mtime = 0, ino = 0, ctime = 0;
        int r = disk_fingerprint(vm->cfg.disks[i].path, &size, &mtime);
        if (r == 0)
            r = disk_identity(vm->cfg.disks[i].path, &ino, &ctime);
        if (r < 0)
            return errf(err, errlen, r, "disk %s: %s", vm->cfg.disks[i].path, strerror(-r));
        st_begin(w, "disk", i, VM_SECTION_VERSION);
        st_put_str(w, "path", vm->cfg.disks[i].path);
        st_put_str(w, "format", vm->disk_info[i].format);
        st_put_u64(w, "size", vm->disk_info[i].size);
        st_put_u64(w, "file_size", size);
        st_put_u64(w, "mtime_ns", mtime);
        st_put_u64(w, "ino", ino);
        st_put_u64(w, "ctime_ns", ctime);
        st_end(w);
    }
    return 0;
}

static int save_devices(struct vm *vm, struct st_writer *w, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->ndevices; i++) {
        struct vm_device *d = &vm->devices[i];
        if (!d->save)
            continue;
        char name[ST_NAME_MAX + 1];
        uint32_t inst;
        device_section(vm, i, name, &inst);
        st_begin(w, name, inst, d->state_version);
        int r = d->save(d->dev, w);
        st_end(w);
        if (r < 0)
            return errf(err, errlen, r, "saving device %s: %s", d->name, strerror(-r));
    }
    return 0;
}

static bool page_is_zero(const uint8_t *p)
{
    static const uint8_t zero[ST_RAM_ALIGN];
    return !memcmp(p, zero, ST_RAM_ALIGN);
}

/* RAM after the sections; pages of zeroes are left as holes of a sparse file. */
static int write_ram(struct vm *vm, int fd, uint64_t off, uint64_t size)
{
    const uint64_t chunk = 1 << 20;
    for (uint64_t pos = 0; pos < size; pos += chunk) {
        uint64_t n = size - pos < chunk ? size - pos : chunk;
        const uint8_t *p = vm->mem.base + pos;
        /* Runs of non-zero pages in one write. */
        for (uint64_t a = 0; a < n;) {
            if (page_is_zero(p + a)) {
                a += ST_RAM_ALIGN;
                continue;
            }
            uint64_t b = a + ST_RAM_ALIGN;
            while (b < n && !page_is_zero(p + b))
                b += ST_RAM_ALIGN;
            int r = pwrite_full(fd, p + a, b - a, off + pos + a);
            if (r < 0)
                return r;
            a = b;
        }
    }
    return ftruncate(fd, (off_t)(off + size)) < 0 ? -errno : 0;
}

/* A pipe or socket: the sections, zeroes up to ram_off, then RAM in full (the reader gets
 * the same bytes a file would hold). */
static int stream_state(struct vm *vm, int fd, const struct st_writer *w, uint64_t ram_off, uint64_t ram_size)
{
    static const uint8_t zero[ST_RAM_ALIGN];
    int r = write_full(fd, w->buf, w->len);
    if (r == 0 && ram_off > w->len)
        r = write_full(fd, zero, ram_off - w->len); /* less than a page: ram_off is the next boundary */
    uint64_t copied = vm->mem.ram_size < ram_size ? vm->mem.ram_size : ram_size;
    const uint64_t chunk = 1 << 20;
    for (uint64_t pos = 0; r == 0 && pos < copied; pos += chunk)
        r = write_full(fd, vm->mem.base + pos, copied - pos < chunk ? copied - pos : chunk);
    for (uint64_t pos = copied; r == 0 && pos < ram_size; pos += ST_RAM_ALIGN)
        r = write_full(fd, zero, ST_RAM_ALIGN);
    return r;
}

/* The VM paused and drained: everything into FD (a regular file from offset 0, sparse; or a
 * pipe or socket when STREAM). */
static int save_to_fd(struct vm *vm, int fd, bool stream, char *err, size_t errlen)
{
    struct st_writer w;
    st_writer_init(&w);
    /* Devices first: they finish their I/O in flight (which may still write RAM and raise
     * interrupts), and disks are flushed before their fingerprint is taken. */
    int r = save_devices(vm, &w, err, errlen);
    if (r == 0)
        r = save_vm_section(vm, &w, err, errlen);
    if (r == 0 && vm->fw.size)
        fw_image_save(&vm->fw, vm->firmware, &w);
    if (r == 0)
        r = kvm_state_save(vm, &w, err, errlen);
    if (r == 0)
        r = vcpus_state_save(vm, &w, err, errlen);
    uint64_t ram_size = (vm->mem.ram_size + ST_RAM_ALIGN - 1) & ~(uint64_t)(ST_RAM_ALIGN - 1);
    uint64_t ram_off = 0;
    if (r == 0 && (r = st_finish(&w, ram_size, &ram_off)) < 0)
        errf(err, errlen, r, "building the state: %s", strerror(-r));
    if (r == 0 && stream && (r = stream_state(vm, fd, &w, ram_off, ram_size)) < 0)
        errf(err, errlen, r, "writing the state: %s", strerror(-r));
    if (r == 0 && !stream && (r = pwrite_full(fd, w.buf, w.len, 0)) < 0)
        errf(err, errlen, r, "writing the state: %s", strerror(-r));
    st_writer_free(&w);
    if (r == 0 && !stream && (r = write_ram(vm, fd, ram_off, ram_size)) < 0)
        errf(err, errlen, r, "writing guest RAM: %s", strerror(-r));
    if (r == 0 && !stream && fsync(fd) < 0)
        r = errf(err, errlen, -errno, "fsync: %s", strerror(errno));
    return r;
}

/* KVM finishes an I/O or MMIO exit (a port read's value into the register) only on the next
 * KVM_RUN, and its state before that is not what a restore could resume from (KVM API,
 * KVM_EXIT_IO). A vCPU normally does that itself before it parks (vmm/vcpu.c); one that saw
 * the pause too late is completed from here: KVM_RUN with immediate_exit set runs no guest
 * instruction. The vCPU's thread is parked and not in any ioctl. */
static int complete_pending_io(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!__atomic_load_n(&v->io_pending, __ATOMIC_SEQ_CST) || !v->run)
            continue;
        __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        int r = ioctl(v->fd, KVM_RUN, 0) < 0 ? -errno : 0;
        __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
        if (r < 0 && r != -EINTR && r != -EAGAIN)
            return r;
        __atomic_store_n(&v->io_pending, false, __ATOMIC_SEQ_CST);
    }
    return 0;
}

static int pause_settled(struct vm *vm)
{
    int r = vm_pause(vm);
    return r < 0 ? r : complete_pending_io(vm);
}

/* The caller's FD: an empty regular file (written from offset 0; nothing it held is
 * overwritten) or a pipe or socket (written in order; *STREAM set). */
static int check_save_fd(int fd, bool *stream, char *err, size_t errlen)
{
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fstat(fd, &st) < 0)
        return errf(err, errlen, -EBADF, "save fd %d: %s", fd, strerror(errno));
    if ((fl & O_ACCMODE) == O_RDONLY)
        return errf(err, errlen, -EBADF, "save fd %d is not open for writing", fd);
    *stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
    if (*stream)
        return 0;
    if (!S_ISREG(st.st_mode))
        return errf(err, errlen, -EINVAL, "save fd %d is not a regular file, pipe or socket", fd);
    if (st.st_size != 0 || (fl & O_APPEND))
        return errf(err, errlen, -EEXIST,
                    "save fd %d: the file is not empty or is in append mode "
                    "(a state file is written whole, from its start)",
                    fd);
    return 0;
}

static int vm_save_to(struct vm *vm, const char *path, int save_fd, char *err, size_t errlen)
{
    if (vm_stopping(vm))
        return errf(err, errlen, -EBUSY, "the VM is stopping or rebooting");
    bool stream = false;
    int fd = save_fd;
    if (path && (fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        return errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
    if (!path) {
        int r = check_save_fd(fd, &stream, err, errlen);
        if (r < 0)
            return r;
    }
    pthread_mutex_lock(&vm->lock);
    bool was_paused = vm->paused;
    pthread_mutex_unlock(&vm->lock);
    int r = pause_settled(vm);
    pthread_mutex_lock(&vm->lock);
    bool parked = vm->vcpus_parked == vm->ncpus && !vm->stop_requested && !vm->reset_requested;
    pthread_mutex_unlock(&vm->lock);
    if (r < 0 && parked)
        r = errf(err, errlen, r, "completing the vCPUs' last I/O: %s", strerror(-r));
    else if (r < 0 || !parked)
        r = errf(err, errlen, r < 0 ? r : -EBUSY, "the VM is stopping or rebooting");
    else
        r = save_to_fd(vm, fd, stream, err, errlen);
    if (path)
        close(fd);
    if (r < 0) {
        if (path)
            unlink(path);
        for (unsigned i = 0; i < vm->ndevices; i++)
            if (vm->devices[i].save_failed && parked)
                vm->devices[i].save_failed(vm->devices[i].dev);
        if (!was_paused)
            vm_resume(vm);
        return r;
    }
    /* Like virsh save: the VM ends once its state is safe. */
    if (path)
        vm_request_stop(vm, KVMBOX_STOP_DETACH, 0, "saved to %s", path);
    else
        vm_request_stop(vm, KVMBOX_STOP_DETACH, 0, "saved to fd %d", fd);
    return 0;
}

int vm_save_request(struct vm *vm, const char *path, int fd, char *err, size_t errlen)
{
    struct vm_save_req req = { .path = path, .fd = fd };
    pthread_mutex_lock(&vm->lock);
    if (vm->save_req || vm->stop_requested) {
        pthread_mutex_unlock(&vm->lock);
        return errf(err, errlen, -EBUSY,
                    vm->save_req ? "a save is already in progress" : "the VM is stopping");
    }
    vm->save_req = &req;
    pthread_cond_broadcast(&vm->cond);
    while (!req.done)
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    if (req.result < 0)
        snprintf(err, errlen, "%s", req.err);
    return req.result;
}

bool vm_save_serve(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    struct vm_save_req *req = vm->save_req;
    pthread_mutex_unlock(&vm->lock);
    if (!req)
        return false;
    int r = vm_save_to(vm, req->path, req->fd, req->err, sizeof(req->err));
    pthread_mutex_lock(&vm->lock);
    req->result = r;
    req->done = true;
    vm->save_req = NULL;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return true;
}

void vm_save_cancel(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    struct vm_save_req *req = vm->save_req;
    if (req) {
        req->result = -ESHUTDOWN;
        snprintf(req->err, sizeof(req->err), "the VM ended before it could be saved");
        req->done = true;
        vm->save_req = NULL;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

/* ---- restore --------------------------------------------------------------------------- */

void vm_restore_free(struct vm *vm)
{
    struct vm_restore *rs = vm->restore;
    if (!rs)
        return;
    st_free(&rs->file);
    free(rs->meta);
    if (rs->fd >= 0)
        close(rs->fd);
    free(rs->path);
    free(rs);
    vm->restore = NULL;
}

/* The vm section against the configuration the VM is being built with. */
static int check_vm_section(struct vm *vm, struct st_file *f, char *err, size_t errlen)
{
    const struct st_section *s = st_find(f, "vm", 0);
    uint64_t cpus, mem, ndisks;
    if (!s || st_get_uint(s, "cpus", &cpus) < 0 || st_get_uint(s, "mem", &mem) < 0 ||
        st_get_uint(s, "disks", &ndisks) < 0)
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (no vm section)");
    if (s->version != VM_SECTION_VERSION)
        return errf(err, errlen, -EPROTO, "saved state: vm section version %u, this kvmbox reads %u",
                    s->version, VM_SECTION_VERSION);
    if (cpus != vm->cfg.cpus || mem != vm->cfg.mem_size || ndisks != vm->cfg.ndisks)
        return errf(err, errlen, -EINVAL,
                    "the saved VM had %llu vCPUs, %llu MiB and %llu disks; this "
                    "configuration has %u, %llu MiB and %u",
                    (unsigned long long)cpus, (unsigned long long)(mem >> 20), (unsigned long long)ndisks,
                    vm->cfg.cpus, (unsigned long long)(vm->cfg.mem_size >> 20), vm->cfg.ndisks);
    if (f->h.ram_size != ((mem + ST_RAM_ALIGN - 1) & ~(uint64_t)(ST_RAM_ALIGN - 1)))
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (RAM size)");
    return 0;
}

/* Each disk must be the file saved with, unchanged since (size and modification time). */
static int check_disks(struct vm *vm, struct st_file *f, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->cfg.ndisks; i++) {
        const struct st_section *s = st_find(f, "disk", i);
        uint64_t size, mtime, fsize = 0, fmtime = 0;
        uint32_t plen;
        const char *path = s ? st_field(s, "path", &plen) : NULL;
        if (!path || st_get_uint(s, "file_size", &size) < 0 || st_get_uint(s, "mtime_ns", &mtime) < 0)
            return errf(err, errlen, -EBADMSG, "saved state is corrupt (disk %u)", i);
        const char *cur = vm->cfg.disks[i].path;
        if (strlen(cur) != plen || memcmp(cur, path, plen))
            return errf(err, errlen, -EINVAL, "disk %u is %s, but the state was saved with %.*s", i, cur,
                        (int)(plen > 512 ? 512 : plen), path);
        uint64_t ino, ctime, fino = 0, fctime = 0;
        int r = disk_fingerprint(cur, &fsize, &fmtime);
        if (r == 0)
            r = disk_identity(cur, &fino, &fctime);
        if (r < 0)
            return errf(err, errlen, r, "disk %s: %s", cur, strerror(-r));
        /* A disk reverted to the snapshot taken with this state is as it was saved, though
         * its file changed (`kvmbox snapshot revert`). */
        if (vm->cfg.restore_disks_reverted)
            continue;
        if (fsize != size || fmtime != mtime)
            return errf(err, errlen, -ESTALE,
                        "disk %s changed since the state was saved (size or "
                        "modification time differ); restoring would corrupt it",
                        cur);
        /* ino and ctime_ns: files saved by this kvmbox have them (a file without them is
         * checked by size and mtime alone). */
        if (st_get_uint(s, "ino", &ino) == 0 && st_get_uint(s, "ctime_ns", &ctime) == 0 &&
            (fino != ino || fctime != ctime))
            return errf(err, errlen, -ESTALE,
                        "disk %s changed since the state was saved (%s); "
                        "restoring would corrupt it",
                        cur, fino != ino ? "it is another file" : "its change time differs");
    }
    return 0;
}

/* The state file by its path, or the caller's restore_fd (duplicated: the caller may close
 * its own). Its RAM is mapped, so it must be a regular file: a pipe or socket is refused. */
static int open_state(struct vm *vm, struct vm_restore *rs, char *err, size_t errlen)
{
    int cfd = vm->cfg.restore_fd;
    if (vm->cfg.restore_path)
        rs->path = strdup(vm->cfg.restore_path);
    else if (asprintf(&rs->path, "restore fd %d", cfd) < 0)
        rs->path = NULL;
    if (!rs->path)
        return errf(err, errlen, -ENOMEM, "out of memory");
    if (vm->cfg.restore_path)
        rs->fd = open(rs->path, O_RDONLY | O_CLOEXEC);
    else
        rs->fd = fcntl(cfd, F_DUPFD_CLOEXEC, 3);
    if (rs->fd < 0)
        return errf(err, errlen, -errno, "%s: %s", rs->path, strerror(errno));
    struct stat st;
    int fl = fcntl(rs->fd, F_GETFL);
    if (fstat(rs->fd, &st) < 0 || fl < 0)
        return errf(err, errlen, -errno, "%s: %s", rs->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return errf(err, errlen, -EINVAL,
                    "%s is not a regular file (a saved VM's RAM is mapped from "
                    "its file; a pipe or socket cannot be: save the stream to a file first)",
                    rs->path);
    if ((fl & O_ACCMODE) == O_WRONLY)
        return errf(err, errlen, -EBADF, "%s is not open for reading", rs->path);
    return 0;
}

int vm_restore_open(struct vm *vm, char *err, size_t errlen)
{
    struct vm_restore *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return errf(err, errlen, -ENOMEM, "out of memory");
    rs->fd = -1;
    vm->restore = rs;
    int r = open_state(vm, rs, err, errlen);
    if (r < 0)
        return r;
    uint8_t hdr[ST_HEADER_SIZE];
    struct st_header h;
    r = pread_full(rs->fd, hdr, sizeof(hdr), 0, true);
    if (r < 0)
        return errf(err, errlen, r, "%s: %s", rs->path, strerror(-r));
    if ((r = st_parse_header(hdr, sizeof(hdr), &h, err, errlen)) < 0)
        return r;
    struct stat st;
    if (fstat(rs->fd, &st) < 0)
        return errf(err, errlen, -errno, "%s: %s", rs->path, strerror(errno));
    if ((uint64_t)st.st_size < h.ram_offset + h.ram_size)
        return errf(err, errlen, -EBADMSG, "saved state is truncated (%llu of %llu bytes)",
                    (unsigned long long)st.st_size, (unsigned long long)(h.ram_offset + h.ram_size));
    size_t len = ST_HEADER_SIZE + h.meta_size; /* bounded by st_parse_header */
    rs->meta = malloc(len);
    if (!rs->meta)
        return errf(err, errlen, -ENOMEM, "out of memory");
    if ((r = pread_full(rs->fd, rs->meta, len, 0, false)) < 0)
        return errf(err, errlen, r, "%s: %s", rs->path, strerror(-r));
    if ((r = st_parse(rs->meta, len, &rs->file, err, errlen)) < 0 ||
        (r = check_vm_section(vm, &rs->file, err, errlen)) < 0 ||
        (r = check_disks(vm, &rs->file, err, errlen)) < 0)
        return r;
    return 0;
}

int vm_restore_firmware(struct vm *vm, char *err, size_t errlen)
{
    const struct st_section *s = st_find(&vm->restore->file, "firmware", 0);
    if (!s != !vm->fw.size)
        return errf(err, errlen, -EINVAL, "the state was saved %s firmware; this configuration has %s",
                    s ? "with" : "without", vm->fw.size ? "one" : "none");
    return s ? fw_image_load_state(&vm->fw, vm->firmware, s, err, errlen) : 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* --prefault: the pages the file holds data for are read in now (holes are zero pages and
 * cost nothing later); MADV_POPULATE_READ where the kernel has it (5.14), else a read per
 * page. */
static void prefault(int fd, uint8_t *base, uint64_t off, uint64_t size)
{
    uint64_t end = off + size;
    for (uint64_t pos = off; pos < end;) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0 || (uint64_t)data >= end)
            break;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        uint64_t stop = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
        uint64_t a = (uint64_t)data & ~(uint64_t)(ST_RAM_ALIGN - 1);
        uint8_t *p = base + (a - off);
        if (madvise(p, stop - a, MADV_POPULATE_READ) < 0)
            for (uint64_t i = 0; i < stop - a; i += ST_RAM_ALIGN)
                (void)*(volatile uint8_t *)(p + i);
        pos = stop;
    }
}

/* The saved RAM replaces the anonymous mapping, copy-on-write: nothing is read until the
 * guest touches it (unless prefault is asked for), and the file is never written. */
int vm_restore_ram(struct vm *vm, char *err, size_t errlen)
{
    struct vm_restore *rs = vm->restore;
    if (vm->mem.page_size > ST_RAM_ALIGN)
        return errf(err, errlen, -EINVAL, "a saved VM cannot be restored onto hugetlbfs pages (--hugepages)");
    void *p = mmap(vm->mem.base, rs->file.h.ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, rs->fd,
                   (off_t)rs->file.h.ram_offset);
    if (p == MAP_FAILED)
        return errf(err, errlen, -errno, "mapping the saved RAM: %s", strerror(errno));
    vm->ram_from_state = true;
    if (vm->cfg.restore_prefault)
        prefault(rs->fd, vm->mem.base, rs->file.h.ram_offset, rs->file.h.ram_size);
    return 0;
}

int vm_restore_ram_release(struct vm *vm)
{
    if (!vm->ram_from_state)
        return 0;
    uint64_t len = (vm->mem.ram_size + ST_RAM_ALIGN - 1) & ~(uint64_t)(ST_RAM_ALIGN - 1);
    void *p = mmap(vm->mem.base, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if (!strcmp(vm->mem.huge, "transparent"))
        madvise(p, len, MADV_HUGEPAGE);
    vm->ram_from_state = false;
    return 0;
}

static int load_devices(struct vm *vm, struct st_file *f, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->ndevices; i++) {
        struct vm_device *d = &vm->devices[i];
        if (!d->load)
            continue;
        char name[ST_NAME_MAX + 1];
        uint32_t inst;
        device_section(vm, i, name, &inst);
        const struct st_section *s = st_find(f, name, inst);
        if (!s)
            return errf(err, errlen, -EBADMSG, "saved state has no section for device %s %u", name, inst);
        if (s->version != d->state_version)
            return errf(err, errlen, -EPROTO, "saved state: section %s version %u, this kvmbox reads %u",
                        name, s->version, d->state_version);
        int r = d->load(d->dev, s, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

int vm_restore_apply(struct vm *vm, char *err, size_t errlen)
{
    struct st_file *f = &vm->restore->file;
    int r;
    if ((r = kvm_state_load(vm, f, err, errlen)) < 0 || (r = vcpus_state_load(vm, f, err, errlen)) < 0 ||
        (r = load_devices(vm, f, err, errlen)) < 0)
        return r;
    const struct st_section *u = st_unused(f);
    if (u)
        return errf(err, errlen, -EPROTO, "saved state has a section this kvmbox does not know: %s %u",
                    u->name, u->instance);
    if (vm->cfg.restore_paused) {
        /* The vCPUs park before their first KVM_RUN; resume sets the clock again. */
        struct kvm_clock_data cd = { 0 };
        if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &cd) == 0)
            vm->kvmclock = cd.clock;
        __atomic_store_n(&vm->paused, true, __ATOMIC_SEQ_CST);
    }
    vm_restore_free(vm);
    return 0;
}

/* ---- for whole-VM snapshots (vmm/vm_snapshot.c), which pause, drain and save without
 * stopping the VM ---------------------------------------------------------------------- */

int vm_pause_settled(struct vm *vm)
{
    return pause_settled(vm);
}

int vm_save_devices(struct vm *vm, struct st_writer *w, char *err, size_t errlen)
{
    return save_devices(vm, w, err, errlen);
}

int vm_save_to_fd(struct vm *vm, int fd, char *err, size_t errlen)
{
    return save_to_fd(vm, fd, false, err, errlen);
}
