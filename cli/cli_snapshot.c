/* kvmbox snapshot NAME create|list|revert|delete|current: whole-VM snapshots, like virsh
 * snapshot-create-as, snapshot-list, snapshot-revert, snapshot-delete and snapshot-current
 * (docs/savestate.md, "Snapshots").
 *
 * A snapshot is a qcow2 internal snapshot of every writable qcow2 disk (named after it) and,
 * for a running VM, the VM's state (the `kvmbox save` format). They are kept with the
 * definition: CONFIG_DIR/NAME.snapshots/SNAP.json (the metadata: written last, through a
 * temporary file and a rename that never replaces, so a snapshot exists once its metadata
 * does), SNAP.state, and "current" (the snapshot last created or reverted to). A running VM
 * takes and deletes its disks' snapshots itself (it holds the images locked: the
 * snapshot-create and snapshot-delete requests, vmm/vm_snapshot.c); a stopped VM's images are
 * opened here. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "cli/cli.h"
#include "include/kvmbox.h"
#include "vmm/config.h"
#include "vmm/settings.h"

#define SNAP_USAGE                                                                                   \
    "usage: kvmbox snapshot NAME create [SNAP] [--disk-only | --memory-only] [--description TEXT]\n" \
    "       kvmbox snapshot NAME list [--name]\n"                                                    \
    "       kvmbox snapshot NAME revert SNAP\n"                                                      \
    "       kvmbox snapshot NAME delete SNAP\n"                                                      \
    "       kvmbox snapshot NAME current\n"

/* A disk as snapshots see it. */
struct snap_disk {
    char *path;
    char format[16];
    bool readonly;
};

struct snap_vm {
    const char *name;
    char dir[4200]; /* CONFIG_DIR/NAME.snapshots */
    bool running;
    bool defined;
    struct snap_disk disks[KVMBOX_MAX_DISKS];
    unsigned ndisks;
    bool disks_known; /* running, or defined */
};

static void snap_vm_free(struct snap_vm *v)
{
    for (unsigned i = 0; i < v->ndisks; i++)
        free(v->disks[i].path);
    v->ndisks = 0;
}

static const char *jget(struct json_object *o, const char *key, const char *dflt)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : dflt;
}

static int snap_dir_path(const char *name, char *buf, size_t len, char *err, size_t errlen)
{
    int r = cli_def_path(name, buf, len, err, errlen);
    if (r < 0)
        return r;
    size_t n = strlen(buf) - strlen(".json");
    if (n + sizeof(".snapshots") > len)
        return errf(err, errlen, -ENAMETOOLONG, "path too long");
    strcpy(buf + n, ".snapshots");
    return 0;
}

static bool valid_snap_name(const char *s)
{
    return cli_valid_name(s);
}

static int bad_snap_name(const char *s, char *err, size_t errlen)
{
    return errf(err, errlen, -EINVAL,
                "invalid snapshot name '%.80s' (up to 64 letters, digits, '-', '_' and '.', not "
                "starting with '.')",
                s);
}

/* DIR/FILE opened for reading, refusing symlinks and anything but a regular file. */
static struct json_object *read_json(const char *dir, const char *file)
{
    char path[4400];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return cli_read_json_object(path, 65535);
}

/* TEXT into DIR/FILE: a new temporary file (O_EXCL), fsync'd, renamed into place. Replaces
 * an existing FILE only when REPLACE (else -EEXIST). */
static int write_file(const char *dir, const char *file, const char *text, bool replace, char *err,
                      size_t errlen)
{
    char tmp[4400], path[4400];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, file);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, -errno, "cannot write in %s: %s", dir, strerror(errno));
    int r = write_full(fd, text, strlen(text));
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 &&
        (replace ? rename(tmp, path) : renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE)) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return errf(err, errlen, r, "cannot write %s: %s", path, strerror(-r));
    }
    return 0;
}

/* The snapshot directory, created (0700) when CREATE; refused when it is not a directory of
 * ours (a symlink planted there is not followed). -ENOENT when it does not exist. */
static int snap_dir_ready(struct snap_vm *v, bool create, char *err, size_t errlen)
{
    if (create && mkdir(v->dir, 0700) < 0 && errno != EEXIST)
        return errf(err, errlen, -errno, "%s: %s", v->dir, strerror(errno));
    struct stat st;
    if (lstat(v->dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return errf(err, errlen, -EPERM, "%s is not a private directory of this user", v->dir);
    return 0;
}

static int add_disk(struct snap_vm *v, const char *path, const char *format, bool readonly)
{
    if (v->ndisks >= KVMBOX_MAX_DISKS)
        return -E2BIG;
    struct snap_disk *d = &v->disks[v->ndisks];
    d->path = strdup(path);
    if (!d->path)
        return -ENOMEM;
    snprintf(d->format, sizeof(d->format), "%s", format ? format : "");
    d->readonly = readonly;
    v->ndisks++;
    return 0;
}

/* A disk's format as its image says (for a definition that leaves it to the probe). */
static void probe_format(const char *path, char *out, size_t len)
{
    struct blk *b;
    bool raw;
    snprintf(out, len, "?");
    if (blk_open(path, NULL, BLK_O_NO_BACKING | BLK_O_NO_LOCK | BLK_O_FORCE_SHARE, &b, &raw, NULL, 0) < 0)
        return;
    struct blk_info info;
    if (blk_get_info(b, &info) == 0)
        snprintf(out, len, "%s", info.format);
    blk_close(b);
}

/* Whether NAME runs, is defined, and its disks (from the running VM, else its definition). */
static int snap_vm_load(struct snap_vm *v, const char *name, char *err, size_t errlen)
{
    memset(v, 0, sizeof(*v));
    v->name = name;
    int r = snap_dir_path(name, v->dir, sizeof(v->dir), err, errlen);
    if (r < 0)
        return r;
    struct json_object *reply, *info, *disks;
    r = cli_request(name, "info", &reply, err, errlen);
    if (r == 0) {
        v->running = v->disks_known = true;
        if (json_object_object_get_ex(reply, "info", &info) &&
            json_object_object_get_ex(info, "disks", &disks))
            for (size_t i = 0; i < json_object_array_length(disks) && r == 0; i++) {
                struct json_object *d = json_object_array_get_idx(disks, i), *ro;
                bool readonly = json_object_object_get_ex(d, "readonly", &ro) && json_object_get_boolean(ro);
                r = add_disk(v, jget(d, "path", ""), jget(d, "format", "?"), readonly);
            }
        json_object_put(reply);
        if (r < 0)
            return errf(err, errlen, r, "%s", strerror(-r));
    } else if (r != -ENOENT) {
        return r;
    }
    r = 0;
    char derr[512];
    struct json_object *def = cli_def_load(name, derr, sizeof(derr));
    v->defined = def != NULL;
    if (def && !v->running) {
        struct run_options *o = malloc(sizeof(*o));
        if (!o || config_from_def(def, o, derr, sizeof(derr)) < 0) {
            json_object_put(def);
            free(o);
            return errf(err, errlen, -EINVAL, "the definition of %s: %s", name, o ? derr : "out of memory");
        }
        v->disks_known = true;
        for (unsigned i = 0; i < o->vm.ndisks && r == 0; i++) {
            const struct kvmbox_disk *d = &o->vm.disks[i];
            char fmt[16];
            if (d->format)
                snprintf(fmt, sizeof(fmt), "%s", d->format);
            else
                probe_format(d->path, fmt, sizeof(fmt));
            r = add_disk(v, d->path, fmt, d->readonly);
        }
        free(o);
    }
    json_object_put(def);
    if (r < 0)
        return errf(err, errlen, r, "%s", strerror(-r));
    struct stat st;
    if (!v->running && !v->defined && lstat(v->dir, &st) < 0)
        return errf(err, errlen, -ENOENT, "no VM named '%s' runs or is defined", name);
    return 0;
}

/* ---- the disks' internal snapshots, for a stopped VM -------------------------------------- */

static bool image_has(struct blk *b, const char *snap)
{
    int n = blk_snapshot_list(b, NULL, 0);
    struct blk_snapshot *s = n > 0 ? calloc((size_t)n, sizeof(*s)) : NULL;
    bool found = false;
    if (s) {
        n = blk_snapshot_list(b, s, n);
        for (int i = 0; i < n && !found; i++)
            found = !strcmp(s[i].name, snap);
    }
    free(s);
    return found;
}

enum disk_op { DISK_CHECK, DISK_CREATE, DISK_APPLY, DISK_DELETE };

/* OP on the internal snapshot SNAP of each of the NPATHS images (opened for writing, locked:
 * a VM that runs on them makes this fail). Everything is checked before anything changes: a
 * create refuses a name an image has, the others an image without it; a create that fails part
 * way deletes what it made. With DISK_CHECK (shared, read-only) only the presence is
 * checked. */
static int disks_op(char **paths, unsigned npaths, const char *snap, enum disk_op op, char *err,
                    size_t errlen)
{
    struct blk *b[KVMBOX_MAX_DISKS] = { 0 };
    int r = 0;
    unsigned i, made = 0;
    int flags = op == DISK_CHECK ? BLK_O_NO_LOCK | BLK_O_FORCE_SHARE : BLK_O_RDWR;
    for (i = 0; i < npaths && r == 0; i++) {
        char oerr[512];
        bool raw;
        r = blk_open(paths[i], "qcow2", flags, &b[i], &raw, oerr, sizeof(oerr));
        if (r < 0)
            errf(err, errlen, r, "%s", oerr);
        else if (op == DISK_CREATE && image_has(b[i], snap))
            r = errf(err, errlen, -EEXIST, "disk %s already has an internal snapshot named %s", paths[i],
                     snap);
        else if (op != DISK_CREATE && !image_has(b[i], snap))
            r = errf(err, errlen, -ENOENT,
                     "disk %s has no internal snapshot named %s (it changed since the "
                     "snapshot was taken)",
                     paths[i], snap);
    }
    for (i = 0; i < npaths && r == 0 && op != DISK_CHECK; i++) {
        r = op == DISK_CREATE  ? blk_snapshot_create(b[i], snap)
            : op == DISK_APPLY ? blk_snapshot_apply(b[i], snap)
                               : blk_snapshot_delete(b[i], snap);
        if (r == 0)
            r = blk_flush(b[i]);
        if (r < 0)
            errf(err, errlen, r, "disk %s: %s", paths[i],
                 *blk_errmsg(b[i]) ? blk_errmsg(b[i]) : strerror(-r));
        else
            made++;
    }
    if (r < 0 && op == DISK_CREATE)
        for (i = 0; i < made; i++)
            (void)blk_snapshot_delete(b[i], snap);
    for (i = 0; i < npaths; i++)
        if (b[i])
            blk_close(b[i]);
    return r;
}

/* ---- metadata ------------------------------------------------------------------------------ */

static struct json_object *snap_load(struct snap_vm *v, const char *snap, char *err, size_t errlen)
{
    if (!valid_snap_name(snap)) {
        bad_snap_name(snap, err, errlen);
        return NULL;
    }
    char file[128];
    snprintf(file, sizeof(file), "%s.json", snap);
    struct json_object *m = read_json(v->dir, file);
    if (!m)
        errf(err, errlen, -ENOENT, "%s has no snapshot named '%s'", v->name, snap);
    return m;
}

/* The snapshot disks of metadata M (those it took an internal snapshot of). */
static unsigned meta_disks(struct json_object *m, char **paths)
{
    struct json_object *disks;
    unsigned n = 0;
    if (!json_object_object_get_ex(m, "disks", &disks) || !json_object_is_type(disks, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(disks) && n < KVMBOX_MAX_DISKS; i++) {
        struct json_object *d = json_object_array_get_idx(disks, i), *s;
        if (json_object_object_get_ex(d, "snapshot", &s) && json_object_get_boolean(s))
            paths[n++] = (char *)jget(d, "path", "");
    }
    return n;
}

/* The disks of V that take part in snapshots (writable qcow2). */
static unsigned vm_snap_disks(struct snap_vm *v, char **paths)
{
    unsigned n = 0;
    for (unsigned i = 0; i < v->ndisks; i++)
        if (!v->disks[i].readonly && !strcmp(v->disks[i].format, "qcow2"))
            paths[n++] = v->disks[i].path;
    return n;
}

/* The snapshot's disks must be the VM's (same paths, same order): else refuse, one line. */
static int same_disks(struct snap_vm *v, struct json_object *m, const char *snap, char *err, size_t errlen)
{
    char *a[KVMBOX_MAX_DISKS], *b[KVMBOX_MAX_DISKS];
    unsigned na = meta_disks(m, a);
    if (!v->disks_known || !strcmp(jget(m, "kind", ""), "memory"))
        return 0; /* a memory-only snapshot has no disks of its own */
    unsigned nb = vm_snap_disks(v, b);
    for (unsigned i = 0; i < na || i < nb; i++)
        if (i >= na || i >= nb || strcmp(a[i], b[i]))
            return errf(err, errlen, -ESTALE, "the disks of %s changed since snapshot %s was taken (%s %s)",
                        v->name, snap, i < na ? a[i] : b[i],
                        i < na ? "is not one of its disks now" : "was not one of its disks then");
    return 0;
}

static int set_current(struct snap_vm *v, const char *snap, char *err, size_t errlen)
{
    char text[128];
    snprintf(text, sizeof(text), "%s\n", snap);
    return write_file(v->dir, "current", text, true, err, errlen);
}

static void current_name(struct snap_vm *v, char *buf, size_t len)
{
    char path[4400];
    buf[0] = 0;
    snprintf(path, sizeof(path), "%s/current", v->dir);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    char file[128];
    snprintf(file, sizeof(file), "%s.json", buf);
    struct json_object *m = valid_snap_name(buf) ? read_json(v->dir, file) : NULL;
    if (!m)
        buf[0] = 0; /* deleted since */
    json_object_put(m);
}

/* ---- create -------------------------------------------------------------------------------- */

static int snap_create(struct snap_vm *v, const char *snap, const char *kind, const char *desc, char *err,
                       size_t errlen)
{
    char file[128], state[4400], *paths[KVMBOX_MAX_DISKS];
    snprintf(file, sizeof(file), "%s.json", snap);
    bool memory = !strcmp(kind, "memory"), disk = !strcmp(kind, "disk");
    if (!v->running && memory)
        return errf(err, errlen, -EINVAL, "--memory-only needs a running VM (%s is not running)", v->name);
    if (!v->running && !v->defined)
        return errf(err, errlen, -ENOENT, "no VM named '%s' runs or is defined", v->name);
    if (!memory)
        for (unsigned i = 0; i < v->ndisks; i++)
            if (strcmp(v->disks[i].format, "qcow2"))
                return errf(err, errlen, -EINVAL,
                            "disk %s is %s: it cannot hold a snapshot (only qcow2 "
                            "can; --memory-only leaves the disks alone)",
                            v->disks[i].path, v->disks[i].format);
    if (!v->running)
        kind = "disk"; /* a stopped VM has no running state */
    int r = snap_dir_ready(v, true, err, errlen);
    if (r < 0)
        return r;
    struct json_object *old = read_json(v->dir, file);
    json_object_put(old);
    if (old)
        return errf(err, errlen, -EEXIST, "%s already has a snapshot named '%s'", v->name, snap);
    snprintf(state, sizeof(state), "%s/%s.state", v->dir, snap);
    unlink(state); /* left by a create that did not finish (it has no metadata) */
    bool with_state = v->running && !disk;
    unsigned n = vm_snap_disks(v, paths);
    if (v->running) {
        struct json_object *req = json_object_new_object(), *reply = NULL;
        json_object_object_add(req, "request", json_object_new_string("snapshot-create"));
        json_object_object_add(req, "name", json_object_new_string(snap));
        json_object_object_add(req, "kind", json_object_new_string(kind));
        if (with_state)
            json_object_object_add(req, "file", json_object_new_string(state));
        r = cli_request_watch(
            v->name,
            json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
            with_state ? state : NULL, &reply, err, errlen);
        json_object_put(req);
        json_object_put(reply);
    } else {
        r = disks_op(paths, n, snap, DISK_CREATE, err, errlen);
    }
    if (r < 0)
        return r;
    struct json_object *m = json_object_new_object(), *disks = json_object_new_array();
    json_object_object_add(m, "name", json_object_new_string(snap));
    json_object_object_add(m, "created", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(m, "kind", json_object_new_string(kind));
    json_object_object_add(m, "description", json_object_new_string(desc ? desc : ""));
    json_object_object_add(m, "vm_state", json_object_new_string(v->running ? "running" : "shut off"));
    if (with_state)
        json_object_object_add(m, "state", json_object_new_string(state));
    for (unsigned i = 0; i < v->ndisks; i++) {
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "path", json_object_new_string(v->disks[i].path));
        json_object_object_add(d, "format", json_object_new_string(v->disks[i].format));
        json_object_object_add(d, "snapshot", json_object_new_boolean(!memory && !v->disks[i].readonly));
        json_object_array_add(disks, d);
    }
    json_object_object_add(m, "disks", disks);
    r = write_file(
        v->dir, file,
        json_object_to_json_string_ext(m, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE), false,
        err, errlen);
    json_object_put(m);
    if (r == 0)
        r = set_current(v, snap, err, errlen);
    return r;
}

/* ---- delete and revert --------------------------------------------------------------------- */

static int snap_delete(struct snap_vm *v, const char *snap, char *err, size_t errlen)
{
    struct json_object *m = snap_load(v, snap, err, errlen);
    if (!m)
        return valid_snap_name(snap) ? -ENOENT : -EINVAL;
    char *paths[KVMBOX_MAX_DISKS], file[4400];
    unsigned n = meta_disks(m, paths);
    int r = same_disks(v, m, snap, err, errlen);
    if (r == 0 && n && v->running) {
        struct json_object *req = json_object_new_object(), *reply = NULL;
        json_object_object_add(req, "request", json_object_new_string("snapshot-delete"));
        json_object_object_add(req, "name", json_object_new_string(snap));
        r = cli_request(v->name, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &reply, err,
                        errlen);
        json_object_put(req);
        json_object_put(reply);
    } else if (r == 0 && n) {
        r = disks_op(paths, n, snap, DISK_DELETE, err, errlen);
    }
    if (r == 0) {
        /* The metadata goes first: a snapshot without it does not exist. */
        snprintf(file, sizeof(file), "%s/%s.json", v->dir, snap);
        if (unlink(file) < 0)
            r = errf(err, errlen, -errno, "%s: %s", file, strerror(errno));
        snprintf(file, sizeof(file), "%s/%s.state", v->dir, snap);
        unlink(file);
    }
    json_object_put(m);
    return r;
}

/* Stops the running VM and returns once it has ended (its images are closed and unlocked). */
static int stop_vm(struct snap_vm *v, char *err, size_t errlen)
{
    int fd = cli_connect(v->name, err, errlen);
    if (fd < 0)
        return fd == -ENOENT ? 0 : fd;
    struct json_object *reply;
    /* The VM closes its socket as it ends: a request written then must fail, not kill us. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    int r = cli_request(v->name, "kill", &reply, err, errlen);
    json_object_put(reply);
    if (r == 0) {
        reply = cli_request_fd(fd, "wait", err, errlen);
        json_object_put(reply);
    }
    close(fd);
    signal(SIGPIPE, old);                      /* the restored VM's process starts from here */
    for (int i = 0; r == 0 && i < 3000; i++) { /* the socket goes last; 30 s at most */
        int f = cli_connect(v->name, err, errlen);
        if (f < 0)
            return 0;
        close(f);
        usleep(10000);
    }
    return r < 0 ? r : errf(err, errlen, -ETIMEDOUT, "%s did not stop", v->name);
}

static int snap_revert(struct snap_vm *v, const char *snap, char *err, size_t errlen)
{
    struct json_object *m = snap_load(v, snap, err, errlen);
    if (!m)
        return valid_snap_name(snap) ? -ENOENT : -EINVAL;
    char *paths[KVMBOX_MAX_DISKS], state[4400];
    unsigned n = meta_disks(m, paths);
    const char *kind = jget(m, "kind", "disk");
    snprintf(state, sizeof(state), "%s/%s.state", v->dir, snap);
    bool with_state = strcmp(kind, "disk") != 0, full = !strcmp(kind, "full"); /* M is freed below */
    struct stat st;
    int r = same_disks(v, m, snap, err, errlen);
    if (r == 0 && with_state && (lstat(state, &st) < 0 || !S_ISREG(st.st_mode)))
        r = errf(err, errlen, -ENOENT, "snapshot %s has lost its state file %s", snap, state);
    if (r == 0 && n)
        r = disks_op(paths, n, snap, DISK_CHECK, err, errlen);
    if (r < 0) {
        json_object_put(m);
        return r;
    }
    if (v->running && (r = stop_vm(v, err, errlen)) < 0) {
        json_object_put(m);
        return errf(err, errlen, r, "stopping %s: %s", v->name, err);
    }
    if (n && (r = disks_op(paths, n, snap, DISK_APPLY, err, errlen)) < 0) {
        json_object_put(m);
        return r;
    }
    json_object_put(m);
    if ((r = set_current(v, snap, err, errlen)) < 0)
        return r;
    if (!with_state)
        return 0;
    /* Running state: the VM runs from it, exactly as `kvmbox restore` would (it prints the
     * name; with a full snapshot the disks are the ones saved with it). */
    fflush(stdout);
    int status = cli_restore_file(state, v->name, false, false, full);
    return status == CLI_OK ? 0 : -ECANCELED;
}

/* ---- list, current, and what info and undefine need ----------------------------------------- */

static int by_created(const void *a, const void *b)
{
    struct json_object *x = *(struct json_object *const *)a, *y = *(struct json_object *const *)b, *u, *w;
    int64_t p = json_object_object_get_ex(x, "created", &u) ? json_object_get_int64(u) : 0;
    int64_t q = json_object_object_get_ex(y, "created", &w) ? json_object_get_int64(w) : 0;
    return p < q ? -1 : p > q ? 1 : strcmp(jget(x, "name", ""), jget(y, "name", ""));
}

/* The metadata of every snapshot in DIR, oldest first; *N of them. */
static struct json_object **snap_all(const char *dir, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    struct json_object **all = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json"))
            continue;
        struct json_object *m = read_json(dir, e->d_name);
        if (!m)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct json_object **p = realloc(all, cap * sizeof(*p));
            if (!p) {
                json_object_put(m);
                break;
            }
            all = p;
        }
        all[(*n)++] = m;
    }
    closedir(d);
    if (*n)
        qsort(all, *n, sizeof(*all), by_created);
    return all;
}

static void snap_all_free(struct json_object **all, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_object_put(all[i]);
    free(all);
}

static int snap_list(struct snap_vm *v, bool names_only)
{
    size_t n;
    struct json_object **all = snap_all(v->dir, &n);
    if (!names_only) {
        printf(" %-24s %-26s %-7s %s\n", "Name", "Creation Time", "Kind", "Description");
        printf("%s\n", "--------------------------------------------------------------------------------");
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *c;
        time_t t = json_object_object_get_ex(all[i], "created", &c) ? (time_t)json_object_get_int64(c) : 0;
        char when[64];
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %z", localtime(&t));
        if (names_only)
            printf("%s\n", jget(all[i], "name", "?"));
        else
            printf(" %-24s %-26s %-7s %s\n", jget(all[i], "name", "?"), when, jget(all[i], "kind", "?"),
                   jget(all[i], "description", ""));
    }
    snap_all_free(all, n);
    return CLI_OK;
}

struct json_object *cli_snapshot_summary(const char *name)
{
    char dir[4200], cur[128];
    if (snap_dir_path(name, dir, sizeof(dir), NULL, 0) < 0)
        return NULL;
    size_t n;
    struct json_object **all = snap_all(dir, &n);
    if (!n)
        return NULL;
    struct snap_vm v = { .name = name };
    snprintf(v.dir, sizeof(v.dir), "%s", dir);
    current_name(&v, cur, sizeof(cur));
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object(), *c;
        json_object_object_add(o, "name", json_object_new_string(jget(all[i], "name", "?")));
        json_object_object_add(o, "kind", json_object_new_string(jget(all[i], "kind", "?")));
        json_object_object_add(o, "created",
                               json_object_new_int64(json_object_object_get_ex(all[i], "created", &c)
                                                         ? json_object_get_int64(c)
                                                         : 0));
        json_object_object_add(o, "current", json_object_new_boolean(!strcmp(cur, jget(all[i], "name", ""))));
        json_object_array_add(arr, o);
    }
    snap_all_free(all, n);
    return arr;
}

int cli_snapshot_count(const char *name)
{
    char dir[4200];
    if (snap_dir_path(name, dir, sizeof(dir), NULL, 0) < 0)
        return 0;
    size_t n = 0;
    struct json_object **all = snap_all(dir, &n);
    snap_all_free(all, n);
    return (int)n;
}

/* ---- the verb ------------------------------------------------------------------------------- */

static int usage(void)
{
    fputs(SNAP_USAGE, stderr);
    return CLI_USAGE;
}

/* The status for a failure R: bad input (2) for what the user can fix, else 1. */
static int fail_status(int r)
{
    switch (r) {
    case -EINVAL:
    case -ENOENT:
    case -EEXIST:
    case -ESTALE:
    case -ENOTSUP: return CLI_USAGE;
    default: return CLI_FAIL;
    }
}

static int cmd_create(struct snap_vm *v, int argc, char **argv, char *err, size_t errlen)
{
    const char *snap = NULL, *desc = NULL, *kind = "full";
    char stamp[32];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--disk-only") && strcmp(kind, "memory"))
            kind = "disk";
        else if (!strcmp(argv[i], "--memory-only") && strcmp(kind, "disk"))
            kind = "memory";
        else if (!strcmp(argv[i], "--description") && i + 1 < argc)
            desc = argv[++i];
        else if (argv[i][0] != '-' && !snap)
            snap = argv[i];
        else
            return usage();
    }
    if (!snap) { /* as virsh: the time in seconds */
        snprintf(stamp, sizeof(stamp), "%lld", (long long)time(NULL));
        snap = stamp;
    }
    if (!valid_snap_name(snap))
        return bad_snap_name(snap, err, errlen);
    if (desc && strlen(desc) > 4096)
        return errf(err, errlen, -EINVAL, "the description is longer than 4096 bytes");
    int r = snap_create(v, snap, kind, desc, err, errlen);
    if (r == 0)
        printf("snapshot %s of %s created (%s)\n", snap, v->name, !v->running ? "disk" : kind);
    return r;
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *name = argv[1], *verb = argv[2];
    char err[KVMBOX_MSG_MAX + 256] = "";
    struct snap_vm v;
    int r = snap_vm_load(&v, name, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        snap_vm_free(&v);
        return r == -ENOENT || r == -EINVAL ? CLI_USAGE : cli_status(r);
    }
    int status = CLI_OK;
    if (!strcmp(verb, "create")) {
        r = cmd_create(&v, argc - 3, argv + 3, err, sizeof(err));
        if (r == CLI_USAGE) {
            snap_vm_free(&v);
            return r;
        }
    } else if (!strcmp(verb, "list") && (argc == 3 || (argc == 4 && !strcmp(argv[3], "--name")))) {
        status = snap_list(&v, argc == 4);
    } else if (!strcmp(verb, "current") && argc == 3) {
        char cur[128];
        current_name(&v, cur, sizeof(cur));
        if (cur[0])
            printf("%s\n", cur);
        else
            r = errf(err, sizeof(err), -ENOENT, "%s has no current snapshot", name);
    } else if (!strcmp(verb, "delete") && argc == 4) {
        if ((r = snap_delete(&v, argv[3], err, sizeof(err))) == 0)
            printf("snapshot %s of %s deleted\n", argv[3], name);
    } else if (!strcmp(verb, "revert") && argc == 4) {
        r = snap_revert(&v, argv[3], err, sizeof(err));
        if (r == -ECANCELED) { /* the restore said why */
            snap_vm_free(&v);
            return CLI_FAIL;
        }
    } else {
        snap_vm_free(&v);
        return usage();
    }
    snap_vm_free(&v);
    if (r < 0) {
        fprintf(stderr, "kvmbox: snapshot: %s\n", err);
        return fail_status(r);
    }
    return status;
}
