/* Runtime and definition directories, the control-socket client, definitions as JSON. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm/api.h"
#include "common/util.h"

#define CLI_REPLY_TIMEOUT_S 30

/* The runtime directory holds the control sockets, logs and exit records; the config
 * directory the definitions. Both must be the user's own (dir_make_private): the runtime
 * directory private (no group or other bits at all), the config directory not writable by
 * others. */
static int pick_dir(char *buf, size_t len, const char *env, const char *root_dir, const char *xdg,
                    const char *xdg_sub, const char *home_sub, unsigned forbidden, const char *what,
                    char *err, size_t errlen)
{
    const char *e = getenv(env), *x = getenv(xdg), *h = getenv("HOME");
    int n;
    if (e && *e)
        n = snprintf(buf, len, "%s", e);
    else if (geteuid() == 0)
        n = snprintf(buf, len, "%s", root_dir);
    else if (x && *x)
        n = snprintf(buf, len, "%s/%s", x, xdg_sub);
    else if (home_sub && h && *h)
        n = snprintf(buf, len, "%s/%s", h, home_sub);
    else
        n = snprintf(buf, len, "/tmp/kvmbox-%u", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= len)
        return errf(err, errlen, -ENAMETOOLONG, "%s directory name is too long", what);
    char why[512];
    int r = dir_make_private(buf, forbidden, why, sizeof(why));
    if (r < 0)
        return errf(err, errlen, r, "unsafe %s directory: %s; refusing to use it (remove it, or set %s)",
                    what, why, env);
    return 0;
}

int cli_runtime_dir(char *buf, size_t len, char *err, size_t errlen)
{
    return pick_dir(buf, len, "KVMBOX_RUNTIME_DIR", "/run/kvmbox", "XDG_RUNTIME_DIR", "kvmbox", NULL, 077,
                    "runtime", err, errlen);
}

int cli_config_dir(char *buf, size_t len, char *err, size_t errlen)
{
    return pick_dir(buf, len, "KVMBOX_CONFIG_DIR", "/etc/kvmbox/vms", "XDG_CONFIG_HOME", "kvmbox/vms",
                    ".config/kvmbox/vms", 022, "configuration", err, errlen);
}

/* Names become file names: letters, digits, '-', '_', '.', not starting with '.'. */
bool cli_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
            return false;
    return true;
}

int cli_bad_name(const char *name, char *err, size_t errlen)
{
    return errf(err, errlen, -EINVAL,
                "invalid VM name '%.80s' (up to 64 letters, digits, '-', '_' "
                "and '.', not starting with '.')",
                name);
}

static int name_path(bool config, const char *name, const char *suffix, char *buf, size_t len, char *err,
                     size_t errlen)
{
    if (!cli_valid_name(name))
        return cli_bad_name(name, err, errlen);
    char dir[2048];
    int r = config ? cli_config_dir(dir, sizeof(dir), err, errlen)
                   : cli_runtime_dir(dir, sizeof(dir), err, errlen);
    if (r < 0)
        return r;
    int n = snprintf(buf, len, "%s/%s%s", dir, name, suffix);
    if (n < 0 || (size_t)n >= len)
        return errf(err, errlen, -ENAMETOOLONG, "path %s/%s%s is too long", dir, name, suffix);
    return 0;
}

int cli_runtime_path(const char *name, const char *suffix, char *buf, size_t len, char *err, size_t errlen)
{
    return name_path(false, name, suffix, buf, len, err, errlen);
}

int cli_def_path(const char *name, char *buf, size_t len, char *err, size_t errlen)
{
    return name_path(true, name, ".json", buf, len, err, errlen);
}

int cli_status(int r)
{
    return r == -EINVAL ? CLI_USAGE : CLI_FAIL;
}

/* Removes PATH if it is still what lstat saw as BEFORE (a socket, or a --api-sock alias
 * link) and so not a socket a new VM bound in between. */
static void remove_stale(const char *path, const struct stat *before)
{
    struct stat now;
    if (lstat(path, &now) == 0 && now.st_dev == before->st_dev && now.st_ino == before->st_ino &&
        (S_ISSOCK(now.st_mode) || S_ISLNK(now.st_mode)))
        unlink(path);
}

/* The server of a control socket must be us or root: anyone else could be reading our
 * console keystrokes or answering in the VM's name. */
static int check_server(int fd, const char *path, char *err, size_t errlen)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        int e = errno;
        return errf(err, errlen, -e, "cannot tell who serves %s: %s", path, strerror(e));
    }
    if (cred.uid != geteuid() && cred.uid != 0)
        return errf(err, errlen, -EPERM, "%s is served by uid %u, neither you nor root: not talking to it",
                    path, (unsigned)cred.uid);
    return 0;
}

int cli_connect(const char *name, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int r = cli_runtime_path(name, ".sock", sa.sun_path, sizeof(sa.sun_path), err, errlen);
    if (r < 0)
        return r;
    struct stat before;
    if (lstat(sa.sun_path, &before) < 0)
        return errf(err, errlen, -ENOENT, "no running VM named '%s'", name);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        r = check_server(fd, sa.sun_path, err, errlen);
        if (r == 0)
            return fd;
        close(fd);
        return r;
    }
    int e = errno;
    close(fd);
    /* Nobody listens (the VM died without cleaning up), or a --api-sock alias whose
     * socket is gone: the name is free. */
    if (e == ECONNREFUSED || (e == ENOENT && S_ISLNK(before.st_mode))) {
        remove_stale(sa.sun_path, &before);
        e = ENOENT;
    }
    if (e == ENOENT)
        return errf(err, errlen, -ENOENT, "no running VM named '%s'", name);
    return errf(err, errlen, -e, "cannot reach VM '%s': %s", name, strerror(e));
}

/* Reads one line (the reply) byte by byte: the connection may carry console data after it. */
static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n + 1 < len) {
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -ECONNRESET;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = 0;
    return (int)n;
}

/* How far a file being written has got (its size and allocated blocks), -1 if it is not there. */
static long long file_progress(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size + (long long)st.st_blocks : -1;
}

struct json_object *cli_request_fd(int fd, const char *req, char *err, size_t errlen)
{
    return cli_request_fd_watch(fd, req, NULL, err, errlen);
}

struct json_object *cli_request_fd_watch(int fd, const char *req, const char *watch, char *err, size_t errlen)
{
    char line[API_MAX_MESSAGE];
    /* A bare verb, or a whole request object. */
    int n = req[0] == '{' ? snprintf(line, sizeof(line), "%s\n", req)
                          : snprintf(line, sizeof(line), "{\"request\":\"%s\"}\n", req);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        errf(err, errlen, -E2BIG, "request too long");
        return NULL;
    }
    if (write_full(fd, line, (size_t)n) < 0) {
        errf(err, errlen, -EIO, "lost the connection to the VM");
        return NULL;
    }
    /* A VM answers at once (its API thread never blocks); a server that does not is not
     * waited for for ever. A request that writes WATCH (a save) answers when it is done: it
     * is waited for while the file grows, however long that takes on a slow disk. */
    struct timeval tv = { .tv_sec = CLI_REPLY_TIMEOUT_S }, none = { 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int r;
    long long seen = -1, now;
    while ((r = read_line(fd, line, sizeof(line))) == -EAGAIN && watch && (now = file_progress(watch)) >= 0 &&
           now != seen)
        seen = now;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    if (r < 0) {
        if (r == -EAGAIN && watch)
            errf(err, errlen, -EIO, "no answer from the VM, and %s did not grow, for %d s", watch,
                 CLI_REPLY_TIMEOUT_S);
        else
            errf(err, errlen, -EIO,
                 r == -EAGAIN ? "no answer from the VM within %d s"
                              : "the VM closed the connection without answering",
                 CLI_REPLY_TIMEOUT_S);
        return NULL;
    }
    struct json_object *o = json_tokener_parse(line), *ok, *msg;
    if (!o) {
        errf(err, errlen, -EPROTO, "unreadable reply from the VM");
        return NULL;
    }
    if (!json_object_object_get_ex(o, "ok", &ok) || !json_object_get_boolean(ok)) {
        const char *m = json_object_object_get_ex(o, "error", &msg) ? json_object_get_string(msg)
                                                                    : "request failed";
        errf(err, errlen, -EIO, "%s", m);
        json_object_put(o);
        return NULL;
    }
    return o;
}

int cli_request(const char *name, const char *req, struct json_object **reply, char *err, size_t errlen)
{
    return cli_request_watch(name, req, NULL, reply, err, errlen);
}

int cli_request_watch(const char *name, const char *req, const char *watch, struct json_object **reply,
                      char *err, size_t errlen)
{
    *reply = NULL;
    int fd = cli_connect(name, err, errlen);
    if (fd < 0)
        return fd;
    *reply = cli_request_fd_watch(fd, req, watch, err, errlen);
    close(fd);
    return *reply ? 0 : -EIO;
}

struct json_object *cli_def_load(const char *name, char *err, size_t errlen)
{
    char path[4200];
    if (cli_def_path(name, path, sizeof(path), err, errlen) < 0)
        return NULL;
    if (access(path, F_OK) < 0) {
        errf(err, errlen, -ENOENT, "no VM named '%s' is defined", name);
        return NULL;
    }
    struct json_object *o = json_object_from_file(path);
    if (!o || !json_object_is_type(o, json_type_object)) {
        errf(err, errlen, -EINVAL, "definition %s is not a JSON object", path);
        json_object_put(o);
        return NULL;
    }
    return o;
}

int cli_def_save(const char *name, struct json_object *def, bool overwrite, char *err, size_t errlen)
{
    char path[4200], tmp[4300];
    int r = cli_def_path(name, path, sizeof(path), err, errlen);
    if (r < 0)
        return r;
    if (!overwrite && access(path, F_OK) == 0)
        return errf(err, errlen, -EEXIST, "a VM named '%s' is already defined", name);
    /* Write a new file of our own (mkostemp: O_EXCL, so nothing planted under a guessable
     * name is followed), then rename: a crash never leaves a half-written definition. */
    char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof(tmp), "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, -errno, "cannot write in %.*s: %s", (int)(slash - path), path,
                    strerror(errno));
    const char *text = json_object_to_json_string_ext(def, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    r = write_full(fd, text, strlen(text));
    if (r == 0)
        r = write_full(fd, "\n", 1);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return errf(err, errlen, r, "cannot write %s: %s", path, strerror(-r));
    }
    return 0;
}

struct json_object *cli_read_json_object(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = malloc(max + 1);
    struct stat st;
    ssize_t n = buf && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, buf, max) : -1;
    close(fd);
    struct json_object *o = NULL;
    if (n > 0) {
        buf[n] = 0;
        o = json_tokener_parse(buf);
    }
    free(buf);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

struct json_object *cli_last_run(const char *name)
{
    char path[4200];
    if (cli_runtime_path(name, ".status", path, sizeof(path), NULL, 0) < 0)
        return NULL;
    struct json_object *o = cli_read_json_object(path, 4095), *v;
    if (!o || !json_object_object_get_ex(o, "status", &v) || !json_object_is_type(v, json_type_int)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

void cli_new_uuid(char *buf)
{
    uint8_t u[16];
    if (getrandom(u, sizeof(u), 0) != sizeof(u))
        for (size_t i = 0; i < sizeof(u); i++)
            u[i] = (uint8_t)rand();
    u[6] = (u[6] & 0x0f) | 0x40; /* version 4 */
    u[8] = (u[8] & 0x3f) | 0x80; /* RFC 4122 variant */
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* A stable, locally administered MAC from the name (FNV-1a), in QEMU's 52:54:00 prefix. */
void cli_mac_from_name(const char *name, char *buf)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(buf, 18, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
}
