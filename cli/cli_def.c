/* Definitions: define, undefine, dumpconfig and clone (virsh define/undefine/dumpxml and
 * virt-clone), and `kvmbox settings`. A definition is a JSON object whose keys and values
 * are those of the settings table (vmm/settings.h); define stores it in canonical form. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"

#include "cli/cli.h"
#include "vmm/config.h"
#include "vmm/settings.h"
#include "common/util.h"

static const char *def_name(struct json_object *def)
{
    struct json_object *v;
    return json_object_object_get_ex(def, "name", &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* A definition is valid when the settings table parses it (known keys, good values,
 * absolute paths) into a machine `run` would accept, with a valid name and, unless FORCE,
 * every file it names there. O gets the machine. */
static int def_check(struct json_object *def, bool force, struct run_options *o, char *err, size_t errlen)
{
    const char *name = def_name(def);
    if (!name || !cli_valid_name(name))
        return errf(err, errlen, -EINVAL,
                    "the definition needs a \"name\" of letters, digits, '-', '_', '.'");
    int r = config_from_def(def, o, err, errlen);
    if (r == 0 && !force && config_check_files(&o->vm, err, errlen) < 0)
        return -EINVAL;
    return r;
}

/* The definition of O's machine in canonical form (the table's own text for each value). */
static struct json_object *def_of(const struct run_options *o)
{
    struct json_object *def = json_object_new_object();
    config_to_def(&o->vm, def);
    return def;
}

static int cmd_define(int argc, char **argv)
{
    bool force = argc == 3 && !strcmp(argv[2], "--force");
    if (argc != 2 && !force) {
        fprintf(stderr, "usage: kvmbox define FILE [--force]\n");
        return CLI_USAGE;
    }
    struct json_object *def = json_object_from_file(argv[1]);
    char err[600];
    if (!def || !json_object_is_type(def, json_type_object)) {
        fprintf(stderr, "kvmbox: %s is not a JSON object: %s\n", argv[1], json_util_get_last_err());
        json_object_put(def);
        return CLI_USAGE;
    }
    struct run_options *o = malloc(sizeof(*o));
    int r = o ? def_check(def, force, o, err, sizeof(err)) : -ENOMEM;
    json_object_put(def);
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s: %s%s\n", argv[1], o ? err : "out of memory",
                r == -EINVAL && !strncmp(err, "\"", 1) && strstr(err, ": No such file")
                    ? " (--force defines it anyway)"
                    : "");
        free(o);
        return CLI_USAGE;
    }
    if (!o->vm.have_uuid) {
        char uuid[37];
        cli_new_uuid(uuid);
        o->vm.have_uuid = config_parse_uuid(uuid, o->vm.uuid) == 0;
    }
    def = def_of(o);
    r = cli_def_save(o->vm.name, def, true, err, sizeof(err));
    if (r == 0)
        printf("defined %s\n", o->vm.name);
    else
        fprintf(stderr, "kvmbox: %s\n", err);
    json_object_put(def);
    free(o);
    return r ? CLI_FAIL : CLI_OK;
}

static int cmd_undefine(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox undefine NAME\n");
        return CLI_USAGE;
    }
    char path[4200], err[512];
    int r = cli_def_path(argv[1], path, sizeof(path), err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(r);
    }
    if (access(path, F_OK) < 0) {
        fprintf(stderr, "kvmbox: no VM named '%s' is defined\n", argv[1]);
        return CLI_FAIL;
    }
    /* As virsh: a VM with snapshots keeps its definition until they are deleted (their
     * metadata and state live beside it, and revert may need it). */
    int n = cli_snapshot_count(argv[1]);
    if (n > 0) {
        fprintf(stderr, "kvmbox: %s has %d snapshot%s: delete them first (kvmbox snapshot %s delete SNAP)\n",
                argv[1], n, n == 1 ? "" : "s", argv[1]);
        return CLI_USAGE;
    }
    if (unlink(path) < 0) {
        fprintf(stderr, "kvmbox: no VM named '%s' is defined\n", argv[1]);
        return CLI_FAIL;
    }
    printf("undefined %s\n", argv[1]);
    return CLI_OK;
}

/* The running VM's definition if it runs, else the stored one. */
static struct json_object *current_def(const char *name, char *err, size_t errlen)
{
    struct json_object *r, *c;
    if (cli_request(name, "config", &r, err, errlen) == 0 && json_object_object_get_ex(r, "config", &c)) {
        json_object_get(c);
        json_object_put(r);
        return c;
    }
    json_object_put(r);
    return cli_def_load(name, err, errlen);
}

static int cmd_dumpconfig(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox dumpconfig NAME\n");
        return CLI_USAGE;
    }
    char err[512];
    if (!cli_valid_name(argv[1])) {
        cli_bad_name(argv[1], err, sizeof(err));
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_USAGE;
    }
    struct json_object *def = current_def(argv[1], err, sizeof(err));
    if (!def) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    printf("%s\n", json_object_to_json_string_ext(def, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(def);
    return CLI_OK;
}

/* Copies SRC to DST keeping holes: only the data extents are copied. */
static int copy_sparse(const char *src, const char *dst, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return errf(err, errlen, -errno, "cannot open %s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return errf(err, errlen, -e, "cannot create %s: %s", dst, strerror(e));
    }
    struct stat st;
    fstat(in, &st);
    int r = ftruncate(out, st.st_size) < 0 ? -errno : 0;
    off_t pos = 0;
    while (r == 0 && pos < st.st_size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0)
            break; /* only a hole remains */
        off_t hole = lseek(in, data, SEEK_HOLE);
        off_t o_in = data, o_out = data;
        while (r == 0 && o_in < hole) {
            ssize_t n = copy_file_range(in, &o_in, out, &o_out, (size_t)(hole - o_in), 0);
            if (n <= 0)
                r = n < 0 ? -errno : -EIO;
        }
        pos = hole;
    }
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    close(in);
    close(out);
    if (r < 0) {
        unlink(dst);
        return errf(err, errlen, r, "copying %s to %s: %s", src, dst, strerror(-r));
    }
    return 0;
}

/* Disk IDX of the clone NEW: a full copy of D's image, or a qcow2 overlay on it; D is
 * changed to name the new image. Its strings go into O's arena. */
static int clone_disk(struct run_options *o, struct kvmbox_disk *d, const char *new_name, int idx,
                      bool linked, char *err, size_t errlen)
{
    char src_abs[4096], dir[4096], dst[4200], fmt[16] = "";
    if (d->format)
        snprintf(fmt, sizeof(fmt), "%s", d->format);
    if (!realpath(d->path, src_abs))
        return errf(err, errlen, -errno, "disk %s: %s", d->path, strerror(errno));
    snprintf(dir, sizeof(dir), "%s", src_abs);
    const char *ext = strrchr(src_abs, '.');
    snprintf(dst, sizeof(dst), "%s/%s-disk%d%s", dirname(dir), new_name, idx,
             linked ? ".qcow2" : (ext && !strchr(ext, '/') ? ext : ""));
    struct stat st;
    if (lstat(dst, &st) == 0) /* the copy is made with O_EXCL; the overlay must not truncate either */
        return errf(err, errlen, -EEXIST, "%s already exists; not overwriting it", dst);
    if (linked) {
        /* The source's format (when the definition does not say) and its size: the overlay
         * has the same size. */
        struct blk *b;
        bool raw;
        if (blk_open(src_abs, *fmt ? fmt : NULL, BLK_O_NO_BACKING | BLK_O_FORCE_SHARE, &b, &raw, err,
                     errlen) < 0)
            return -EIO;
        struct blk_info info;
        blk_get_info(b, &info);
        if (!*fmt)
            snprintf(fmt, sizeof(fmt), "%s", info.format);
        uint64_t size = blk_length(b);
        blk_close(b);
        struct blk_create_opts bo = { .backing_file = src_abs, .backing_format = fmt };
        if (blk_create(dst, "qcow2", size, &bo, err, errlen) < 0)
            return -EIO;
        d->format = "qcow2"; /* the overlay is qcow2 whatever the source was */
    } else if (copy_sparse(src_abs, dst, err, errlen) < 0) {
        return -EIO;
    }
    if (!(d->path = config_strndup(o, dst, strlen(dst))))
        return errf(err, errlen, -ENOMEM, "the definition is too long");
    return 0;
}

/* The clone's NICs keep their networks, with MACs of their own. */
static void clone_nets(struct run_options *o, const char *new_name)
{
    for (unsigned i = 0; i < o->vm.nnics; i++) {
        char name[128], mac[18];
        snprintf(name, sizeof(name), "%s/%u", new_name, i);
        cli_mac_from_name(name, mac);
        o->vm.nics[i].have_mac = config_parse_mac(mac, o->vm.nics[i].mac) == 0;
    }
}

static int cmd_clone(int argc, char **argv)
{
    bool linked = argc == 4 && !strcmp(argv[3], "--linked");
    if (argc != 3 && !linked) {
        fprintf(stderr, "usage: kvmbox clone SRC NEW [--linked]\n");
        return CLI_USAGE;
    }
    const char *src = argv[1], *dst = argv[2];
    char err[600];
    if (!cli_valid_name(src) || !cli_valid_name(dst)) {
        cli_bad_name(cli_valid_name(src) ? dst : src, err, sizeof(err));
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_USAGE;
    }
    int fd = cli_connect(src, err, sizeof(err));
    if (fd >= 0) {
        close(fd);
        fprintf(stderr, "kvmbox: VM '%s' is running; shut it down before cloning\n", src);
        return CLI_FAIL;
    }
    if (fd != -ENOENT) { /* not known to be stopped: the runtime directory is unsafe, ... */
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    struct json_object *def = cli_def_load(src, err, sizeof(err)), *probe = cli_def_load(dst, err + 300, 300);
    if (probe) {
        json_object_put(probe);
        json_object_put(def);
        fprintf(stderr, "kvmbox: a VM named '%s' is already defined\n", dst);
        return CLI_FAIL;
    }
    if (!def) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    struct run_options *o = malloc(sizeof(*o));
    int r = o ? config_from_def(def, o, err, sizeof(err)) : -ENOMEM;
    json_object_put(def);
    if (r < 0) {
        fprintf(stderr, "kvmbox: definition of %s: %s\n", src, o ? err : "out of memory");
        free(o);
        return CLI_USAGE;
    }
    /* A new machine: its own name, UUID, disks and MACs; the control socket in the usual
     * place (two VMs cannot share one). */
    char uuid[37];
    cli_new_uuid(uuid);
    o->vm.name = dst;
    o->vm.have_uuid = config_parse_uuid(uuid, o->vm.uuid) == 0;
    o->vm.api_sock = NULL;
    for (unsigned i = 0; i < o->vm.ndisks && r == 0; i++)
        r = clone_disk(o, &o->vm.disks[i], dst, (int)i, linked, err, sizeof(err));
    clone_nets(o, dst);
    if (r == 0) {
        def = def_of(o);
        r = cli_def_save(dst, def, false, err, sizeof(err));
        json_object_put(def);
    }
    free(o);
    if (r < 0) {
        fprintf(stderr, "kvmbox: clone failed: %s\n", err);
        return CLI_FAIL;
    }
    printf("cloned %s to %s%s\n", src, dst, linked ? " (linked)" : "");
    return CLI_OK;
}

/* `kvmbox settings [--json]`: the table every configuration is made from. */
static int cmd_settings(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--json")) {
        struct json_object *t = config_settings_json();
        printf("%s\n", json_object_to_json_string_ext(t, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(t);
        return CLI_OK;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: kvmbox settings [--json]\n");
        return CLI_USAGE;
    }
    printf("%-10s %-7s %-8s %-14s %s\n", "KEY", "KIND", "STORED", "DEFAULT", "ALIASES");
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        static const char *const kinds[] = { "text", "number", "flag", "list" };
        char al[64] = "";
        for (size_t a = 0; a < ARRAY_SIZE(s->aliases) && s->aliases[a]; a++)
            snprintf(al + strlen(al), sizeof(al) - strlen(al), "%s--%s", a ? ", " : "", s->aliases[a]);
        printf("%-10s %-7s %-8s %-14s %s\n", s->key, kinds[s->kind], s->process ? "no" : "yes",
               s->dflt       ? (*s->dflt ? s->dflt : "\"\"")
               : s->computed ? "(computed)"
                             : "-",
               al);
    }
    return CLI_OK;
}

int cmd_def(const char *verb, int argc, char **argv)
{
    if (!strcmp(verb, "define"))
        return cmd_define(argc, argv);
    if (!strcmp(verb, "undefine"))
        return cmd_undefine(argc, argv);
    if (!strcmp(verb, "dumpconfig"))
        return cmd_dumpconfig(argc, argv);
    if (!strcmp(verb, "settings"))
        return cmd_settings(argc, argv);
    return cmd_clone(argc, argv);
}
