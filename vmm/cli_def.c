/* Definitions: define, undefine, dumpconfig and clone (virsh define/undefine/dumpxml and
 * virt-clone). A definition is a JSON object whose keys are `kvmbox run` options. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"

#include "vmm/cli.h"
#include "vmm/config.h"
#include "vmm/util.h"

static const char *def_name(struct json_object *def)
{
    struct json_object *v;
    return json_object_object_get_ex(def, "name", &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v) : NULL;
}

/* A definition is valid when `kvmbox run` would accept its options. */
static int def_check(struct json_object *def, char *err, size_t errlen)
{
    const char *name = def_name(def);
    if (!name || !cli_valid_name(name))
        return errf(err, errlen, -EINVAL, "the definition needs a \"name\" of letters, digits, '-', '_', '.'");
    int argc;
    char **argv = cli_def_to_argv(def, &argc);
    struct run_options o;
    int r = config_parse_run(argc, argv, &o, err, errlen);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
    return r;
}

static int cmd_define(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox define FILE\n");
        return CLI_USAGE;
    }
    struct json_object *def = json_object_from_file(argv[1]);
    char err[512];
    if (!def || !json_object_is_type(def, json_type_object)) {
        fprintf(stderr, "kvmbox: %s is not a JSON object: %s\n", argv[1], json_util_get_last_err());
        json_object_put(def);
        return CLI_FAIL;
    }
    if (def_check(def, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: %s: %s\n", argv[1], err);
        json_object_put(def);
        return CLI_FAIL;
    }
    struct json_object *u;
    if (!json_object_object_get_ex(def, "uuid", &u)) {
        char uuid[37];
        cli_new_uuid(uuid);
        json_object_object_add(def, "uuid", json_object_new_string(uuid));
    }
    int r = cli_def_save(def_name(def), def, true, err, sizeof(err));
    if (r == 0)
        printf("defined %s\n", def_name(def));
    else
        fprintf(stderr, "kvmbox: %s\n", err);
    json_object_put(def);
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
    printf("%s\n", json_object_to_json_string_ext(def, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
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

/* "path,opt=...,..." -> a new disk for NEW: a full copy or a qcow2 overlay on the source. */
static char *clone_disk(const char *spec, const char *new_name, int idx, bool linked, char *err,
                        size_t errlen)
{
    char path[4096], rest[4096] = "", fmt[16] = "";
    const char *comma = strchr(spec, ',');
    snprintf(path, sizeof(path), "%.*s", comma ? (int)(comma - spec) : (int)strlen(spec), spec);
    if (comma)
        snprintf(rest, sizeof(rest), "%s", comma);
    const char *f = strstr(rest, ",format=");
    if (f)
        snprintf(fmt, sizeof(fmt), "%.*s", (int)strcspn(f + 8, ","), f + 8);
    char src_abs[4096], dir[4096], dst[4200];
    if (!realpath(path, src_abs)) {
        errf(err, errlen, -errno, "disk %s: %s", path, strerror(errno));
        return NULL;
    }
    snprintf(dir, sizeof(dir), "%s", src_abs);
    const char *ext = strrchr(src_abs, '.');
    snprintf(dst, sizeof(dst), "%s/%s-disk%d%s", dirname(dir), new_name, idx,
             linked ? ".qcow2" : (ext && !strchr(ext, '/') ? ext : ""));
    struct stat st;
    if (lstat(dst, &st) == 0) { /* the copy is made with O_EXCL; the overlay must not truncate either */
        errf(err, errlen, -EEXIST, "%s already exists; not overwriting it", dst);
        return NULL;
    }
    if (linked) {
        /* The source's format (when the definition does not say) and its size: the overlay
         * has the same size. */
        struct blk *b;
        bool raw;
        if (blk_open(src_abs, *fmt ? fmt : NULL, BLK_O_NO_BACKING | BLK_O_FORCE_SHARE, &b, &raw,
                     err, errlen) < 0)
            return NULL;
        struct blk_info info;
        blk_get_info(b, &info);
        if (!*fmt)
            snprintf(fmt, sizeof(fmt), "%s", info.format);
        uint64_t size = blk_length(b);
        blk_close(b);
        struct blk_create_opts o = { .backing_file = src_abs, .backing_format = fmt };
        if (blk_create(dst, "qcow2", size, &o, err, errlen) < 0)
            return NULL;
        /* The overlay is qcow2 whatever the source was. */
        char *p = strstr(rest, ",format=");
        if (p) {
            size_t l = 8 + strcspn(p + 8, ",");
            memmove(p, p + l, strlen(p + l) + 1);
        }
        snprintf(rest + strlen(rest), sizeof(rest) - strlen(rest), ",format=qcow2");
    } else if (copy_sparse(src_abs, dst, err, errlen) < 0) {
        return NULL;
    }
    char *out = malloc(strlen(dst) + strlen(rest) + 1);
    if (out)
        sprintf(out, "%s%s", dst, rest);
    return out;
}

/* "mode,...,mac=..." -> the same NIC with NEW's MAC. */
static char *clone_net(const char *spec, const char *new_name, int idx)
{
    char name[128], mac[18], out[4096];
    snprintf(name, sizeof(name), "%s/%d", new_name, idx);
    cli_mac_from_name(name, mac);
    snprintf(out, sizeof(out), "%s", spec);
    char *m = strstr(out, "mac=");
    if (m && (m == out || m[-1] == ','))
        memcpy(m + 4, mac, 17);
    else
        snprintf(out + strlen(out), sizeof(out) - strlen(out), ",mac=%s", mac);
    return strdup(out);
}

static int clone_list(struct json_object *def, const char *key, const char *new_name, bool linked,
                      char *err, size_t errlen)
{
    struct json_object *arr, *fresh = json_object_new_array();
    if (json_object_object_get_ex(def, key, &arr)) {
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            const char *spec = json_object_get_string(json_object_array_get_idx(arr, i));
            char *n = !strcmp(key, "disk") ? clone_disk(spec, new_name, (int)i, linked, err, errlen)
                                           : clone_net(spec, new_name, (int)i);
            if (!n) {
                json_object_put(fresh);
                return -EIO;
            }
            json_object_array_add(fresh, json_object_new_string(n));
            free(n);
        }
    }
    json_object_object_add(def, key, fresh);
    return 0;
}

static int cmd_clone(int argc, char **argv)
{
    bool linked = argc == 4 && !strcmp(argv[3], "--linked");
    if (argc != 3 && !linked) {
        fprintf(stderr, "usage: kvmbox clone SRC NEW [--linked]\n");
        return CLI_USAGE;
    }
    const char *src = argv[1], *dst = argv[2];
    char err[512];
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
    struct json_object *def = cli_def_load(src, err, sizeof(err)), *probe = cli_def_load(dst, err + 256, 256);
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
    char uuid[37];
    cli_new_uuid(uuid);
    json_object_object_add(def, "name", json_object_new_string(dst));
    json_object_object_add(def, "uuid", json_object_new_string(uuid));
    int r = clone_list(def, "disk", dst, linked, err, sizeof(err));
    if (r == 0)
        r = clone_list(def, "net", dst, linked, err, sizeof(err));
    if (r == 0)
        r = cli_def_save(dst, def, false, err, sizeof(err));
    json_object_put(def);
    if (r < 0) {
        fprintf(stderr, "kvmbox: clone failed: %s\n", err);
        return CLI_FAIL;
    }
    printf("cloned %s to %s%s\n", src, dst, linked ? " (linked)" : "");
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
    return cmd_clone(argc, argv);
}
