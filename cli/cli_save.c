/* kvmbox save NAME FILE and kvmbox restore FILE [--name NAME] [--paused] [--prefault]
 * (docs/savestate.md). Save asks the running VM to write its state and stop; restore reads the
 * definition saved in the file and runs it as `kvmbox start` would, with the library told to
 * restore the state instead of booting (kvmbox_config.restore_path). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "cli/cli.h"
#include "vmm/config.h"
#include "vmm/settings.h"
#include "vmm/state.h"

/* What `restore` hands to cmd_run (cli_restore_apply). */
static struct {
    char *path;
    bool paused, prefault, disks_reverted;
} restore_req;

void cli_restore_apply(struct kvmbox_config *cfg)
{
    if (!restore_req.path)
        return;
    cfg->restore_path = restore_req.path;
    cfg->restore_paused = restore_req.paused;
    cfg->restore_prefault = restore_req.prefault;
    cfg->restore_disks_reverted = restore_req.disks_reverted;
}

static char *absolute(const char *path)
{
    char cwd[4096], *p;
    if (path[0] == '/')
        return strdup(path);
    if (!getcwd(cwd, sizeof(cwd)) || asprintf(&p, "%s/%s", cwd, path) < 0)
        return NULL;
    return p;
}

int cmd_save(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: kvmbox save NAME FILE\n");
        return CLI_USAGE;
    }
    const char *name = argv[1];
    char err[KVMBOX_MSG_MAX + 64];
    char *file = absolute(argv[2]);
    if (!file) {
        fprintf(stderr, "kvmbox: save: %s: %s\n", argv[2], strerror(errno));
        return CLI_FAIL;
    }
    signal(SIGPIPE, SIG_IGN); /* the VM closes its socket as it stops */
    struct stat st;
    if (lstat(file, &st) == 0) {
        fprintf(stderr, "kvmbox: save: %s exists (it is not overwritten)\n", file);
        free(file);
        return CLI_USAGE;
    }
    struct json_object *req = json_object_new_object(), *reply;
    json_object_object_add(req, "request", json_object_new_string("save"));
    json_object_object_add(req, "file", json_object_new_string(file));
    int fd = cli_connect(name, err, sizeof(err));
    if (fd < 0) {
        json_object_put(req);
        free(file);
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(fd);
    }
    reply = cli_request_fd_watch(
        fd, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        file, err, sizeof(err));
    json_object_put(req);
    if (!reply) {
        close(fd);
        free(file);
        fprintf(stderr, "kvmbox: save: %s\n", err);
        return CLI_FAIL;
    }
    json_object_put(reply);
    /* Return once the VM is gone, so its name can be restored at once. */
    reply = cli_request_fd(fd, "wait", err, sizeof(err));
    json_object_put(reply);
    close(fd);
    printf("%s saved to %s\n", name, file);
    free(file);
    return CLI_OK;
}

/* The definition saved in FILE (its vm section's "config"), checked as restore will. */
static struct json_object *saved_definition(const char *file, char *err, size_t errlen)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errf(err, errlen, -errno, "%s: %s", file, strerror(errno));
        return NULL;
    }
    uint8_t hdr[ST_HEADER_SIZE];
    struct st_header h;
    struct json_object *def = NULL;
    uint8_t *meta = NULL;
    struct st_file f = { 0 };
    if (pread_full(fd, hdr, sizeof(hdr), 0, true) < 0 ||
        st_parse_header(hdr, sizeof(hdr), &h, err, errlen) < 0)
        goto out;
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < h.ram_offset + h.ram_size) {
        errf(err, errlen, -EBADMSG, "saved state is truncated (%llu of %llu bytes)",
             (unsigned long long)st.st_size, (unsigned long long)(h.ram_offset + h.ram_size));
        goto out;
    }
    size_t len = ST_HEADER_SIZE + h.meta_size;
    meta = malloc(len);
    if (!meta || pread_full(fd, meta, len, 0, true) < 0 || st_parse(meta, len, &f, err, errlen) < 0)
        goto out;
    struct st_section *vm = st_find(&f, "vm", 0);
    uint32_t clen;
    const char *cfg = vm ? st_field(vm, "config", &clen) : NULL;
    if (!cfg) {
        errf(err, errlen, -EBADMSG, "saved state is corrupt (no saved definition)");
        goto out;
    }
    struct json_tokener *tok = json_tokener_new();
    def = tok ? json_tokener_parse_ex(tok, cfg, (int)clen) : NULL;
    if (tok)
        json_tokener_free(tok);
    if (!def || !json_object_is_type(def, json_type_object)) {
        json_object_put(def);
        def = NULL;
        errf(err, errlen, -EBADMSG, "saved state is corrupt (unreadable definition)");
    }
out:
    if (!def && !err[0])
        errf(err, errlen, -EIO, "%s: cannot read it", file);
    st_free(&f);
    free(meta);
    close(fd);
    return def;
}

int cmd_restore(int argc, char **argv)
{
    const char *file = NULL, *name = NULL;
    bool paused = false, prefault = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--paused"))
            paused = true;
        else if (!strcmp(argv[i], "--prefault"))
            prefault = true;
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else {
            fprintf(stderr, "usage: kvmbox restore FILE [--name NAME] [--paused] [--prefault]\n");
            return CLI_USAGE;
        }
    }
    if (!file) {
        fprintf(stderr, "usage: kvmbox restore FILE [--name NAME] [--paused] [--prefault]\n");
        return CLI_USAGE;
    }
    char err[KVMBOX_MSG_MAX] = "";
    if (name && !cli_valid_name(name)) {
        cli_bad_name(name, err, sizeof(err));
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_USAGE;
    }
    return cli_restore_file(file, name, paused, prefault, false);
}

int cli_restore_file(const char *file, const char *name, bool paused, bool prefault, bool disks_reverted)
{
    char err[KVMBOX_MSG_MAX] = "";
    struct json_object *def = saved_definition(file, err, sizeof(err));
    if (!def) {
        fprintf(stderr, "kvmbox: restore: %s\n", err);
        return CLI_USAGE;
    }
    /* Restored under another name, the VM is a copy that may run beside the original: its
     * NICs get the MACs derived from the new name, as kvmbox_vm_clone gives them, and the
     * device tells the restored driver (virtio/net.c). Under its own name it keeps its MACs. */
    struct json_object *saved_name;
    bool renamed = name && (!json_object_object_get_ex(def, "name", &saved_name) ||
                            strcmp(json_object_get_string(saved_name), name));
    if (name)
        json_object_object_add(def, "name", json_object_new_string(name));
    /* The definition may have said --daemonize already; a restored VM always runs in the
     * background, as `kvmbox start` does. */
    json_object_object_del(def, "daemonize");
    struct run_options *o = malloc(sizeof(*o));
    if (!o || config_from_def(def, o, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: restore: the saved definition: %s\n", o ? err : "out of memory");
        json_object_put(def);
        free(o);
        return CLI_USAGE;
    }
    json_object_put(def);
    for (unsigned i = 0; renamed && i < o->vm.nnics; i++)
        o->vm.nics[i].have_mac = false;
    o->daemonize = true;
    restore_req.path = absolute(file);
    restore_req.paused = paused, restore_req.prefault = prefault;
    restore_req.disks_reverted = disks_reverted;
    int status = restore_req.path ? cli_run_options(o) : CLI_FAIL;
    free(restore_req.path);
    restore_req.path = NULL;
    free(o);
    return status;
}
