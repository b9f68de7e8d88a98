/* The log of a daemonized VM (NAME.log in the runtime directory). Everything the daemon
 * prints, the guest's console output and kvmbox's own messages, goes through a pipe to one
 * thread that appends it to NAME.log and keeps it bounded: when the next write would take
 * the file past the limit (1 MiB, or $KVMBOX_LOG_MAX bytes), NAME.log becomes NAME.log.1
 * (the previous NAME.log.1 is dropped) and a fresh NAME.log begins, at a line boundary where
 * there is one. A guest that prints without end (13 KB/s through the emulated UART here,
 * far more on a native host) so costs at most twice the limit, in a directory that is often
 * tmpfs, that is RAM. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "vmm/sandbox.h"
#include "common/util.h"

#define LOG_MAX_DEFAULT (1u << 20)
#define LOG_MAX_MIN     1024u

struct cli_log {
    int dir_fd, cur_fd, old_fd, pipe_rd;
    char cur_name[80], old_name[84];
    uint64_t max, size;
    bool at_line_end; /* NAME.log ends with a complete line */
    bool sandbox;
    pthread_t thread;
};

/* NAME.log or NAME.log.1 in the (private) runtime directory: a regular file of ours, never
 * a planted symlink or FIFO. */
static int open_log_file(int dir_fd, const char *name, char *err, size_t errlen)
{
    int fd = openat(dir_fd, name, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0)
        return errf(err, errlen, -errno, "cannot open the log %s: %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        return errf(err, errlen, -EPERM, "the log %s is not a regular file of yours", name);
    }
    return fd;
}

/* The start of a line the guest is still printing (it prints a byte at a time) is carried
 * over to the new NAME.log, so that NAME.log.1 ends at a line end: this much of it at most. */
#define LOG_CARRY_MAX 8192

/* Where the unfinished last line of NAME.log starts (its length goes to *LEN), read back
 * from the file; -1 when it ends at a line end or the line is too long to carry. */
static off_t partial_line(struct cli_log *l, char *buf, size_t *len)
{
    size_t want = l->size < LOG_CARRY_MAX ? (size_t)l->size : LOG_CARRY_MAX;
    if (want > l->max / 2)
        want = (size_t)(l->max / 2);
    if (l->at_line_end || !want)
        return -1;
    off_t from = (off_t)(l->size - want);
    ssize_t n = pread(l->cur_fd, buf, want, from);
    const char *nl = n > 0 ? memrchr(buf, '\n', (size_t)n) : NULL;
    if (!nl)
        return -1;
    *len = (size_t)(buf + n - (nl + 1));
    memmove(buf, nl + 1, *len);
    return from + (nl + 1 - buf);
}

/* The full NAME.log becomes NAME.log.1 and the old NAME.log.1, emptied, NAME.log: both
 * names are swapped in one step (RENAME_EXCHANGE) so nothing is opened here; a file system
 * that cannot do that gets a copy instead. */
static void rotate(struct cli_log *l)
{
    char carry[LOG_CARRY_MAX];
    size_t clen = 0;
    off_t cut = partial_line(l, carry, &clen);
    if (renameat2(l->dir_fd, l->cur_name, l->dir_fd, l->old_name, RENAME_EXCHANGE) == 0) {
        int t = l->cur_fd;
        l->cur_fd = l->old_fd;
        l->old_fd = t;
    } else if (ftruncate(l->old_fd, 0) == 0) {
        char buf[16384];
        ssize_t n;
        for (off_t off = 0; (n = pread(l->cur_fd, buf, sizeof(buf), off)) > 0; off += n)
            if (write_full(l->old_fd, buf, (size_t)n) < 0)
                break;
    }
    l->size = 0;
    if (ftruncate(l->cur_fd, 0) < 0 || (cut >= 0 && ftruncate(l->old_fd, cut) < 0))
        return; /* the files stay as they are; writing on is all we can do */
    if (cut >= 0 && write_full(l->cur_fd, carry, clen) == 0)
        l->size = clen;
}

/* Appends BUF, rotating so that NAME.log never exceeds the limit. */
static void log_write(struct cli_log *l, const char *p, size_t len)
{
    while (len) {
        size_t room = (size_t)(l->max - l->size), n = len;
        bool full = false;
        if (n > room) {
            const char *nl = room ? memrchr(p, '\n', room) : NULL;
            n = nl ? (size_t)(nl + 1 - p) : room; /* the rest of a line moves on with rotate() */
            full = true;
        }
        if (n && write_full(l->cur_fd, p, n) == 0) {
            l->size += n;
            l->at_line_end = p[n - 1] == '\n';
        }
        p += n, len -= n;
        if (full)
            rotate(l);
    }
}

static void *log_thread(void *arg)
{
    struct cli_log *l = arg;
    pthread_setname_np(pthread_self(), "log");
    if (sandbox_enter(SANDBOX_LOG, l->sandbox) < 0)
        fprintf(stderr, "kvmbox: warning: the log thread runs without its seccomp sandbox\n");
    sandbox_selftest(SANDBOX_LOG);
    char buf[16384];
    for (;;) {
        ssize_t n = read(l->pipe_rd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL; /* every writer is gone */
        log_write(l, buf, (size_t)n);
    }
}

static uint64_t log_max(void)
{
    const char *e = getenv("KVMBOX_LOG_MAX");
    uint64_t v;
    if (!e || parse_size(e, &v) < 0) /* bytes, or with a K/M/G suffix */
        return LOG_MAX_DEFAULT;
    return v < LOG_MAX_MIN ? LOG_MAX_MIN : v;
}

static void log_free(struct cli_log *l)
{
    int fds[] = { l->dir_fd, l->cur_fd, l->old_fd, l->pipe_rd };
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(l);
}

int cli_log_start(const char *name, bool sandbox, struct cli_log **out, char *err, size_t errlen)
{
    char dir[2048];
    int r = cli_runtime_dir(dir, sizeof(dir), err, errlen);
    if (r < 0)
        return r;
    if (!cli_valid_name(name))
        return cli_bad_name(name, err, errlen);
    struct cli_log *l = calloc(1, sizeof(*l));
    if (!l)
        return errf(err, errlen, -ENOMEM, "out of memory");
    l->cur_fd = l->old_fd = l->pipe_rd = -1;
    l->max = log_max();
    l->sandbox = sandbox;
    snprintf(l->cur_name, sizeof(l->cur_name), "%s.log", name);
    snprintf(l->old_name, sizeof(l->old_name), "%s.log.1", name);
    int p[2] = { -1, -1 };
    l->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (l->dir_fd < 0)
        r = errf(err, errlen, -errno, "cannot open %s: %s", dir, strerror(errno));
    if (r == 0 && (r = l->cur_fd = open_log_file(l->dir_fd, l->cur_name, err, errlen)) >= 0)
        r = l->old_fd = open_log_file(l->dir_fd, l->old_name, err, errlen);
    if (r >= 0 && pipe2(p, O_CLOEXEC) < 0)
        r = errf(err, errlen, -errno, "pipe: %s", strerror(errno));
    if (r < 0) {
        log_free(l);
        return r;
    }
    l->pipe_rd = p[0];
    fcntl(p[1], F_SETPIPE_SZ, 256 << 10); /* a burst of output does not stall the vCPU */
    struct stat st;
    l->size = fstat(l->cur_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    l->at_line_end = true; /* what an earlier run left is not carried */
    if (l->size > l->max)
        rotate(l); /* left by an earlier run with a larger limit */
    /* From here on the daemon's stdout and stderr are the pipe. */
    if (dup2(p[1], STDOUT_FILENO) < 0 || dup2(p[1], STDERR_FILENO) < 0 ||
        (r = -pthread_create(&l->thread, NULL, log_thread, l)) < 0) {
        r = r < 0 ? r : -errno;
        dup2(l->cur_fd, STDOUT_FILENO), dup2(l->cur_fd, STDERR_FILENO);
        close(p[1]);
        log_free(l);
        return errf(err, errlen, r, "cannot start the log writer: %s", strerror(-r));
    }
    close(p[1]);
    *out = l;
    return 0;
}

void cli_log_stop(struct cli_log *l, const char *last_line)
{
    if (!l)
        return;
    /* Closing the last write ends lets the thread drain the pipe and end. What is printed
     * after (a sanitizer's report at exit) goes to NAME.log directly. */
    fflush(stdout), fflush(stderr);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dup2(null, STDOUT_FILENO), dup2(null, STDERR_FILENO);
    pthread_join(l->thread, NULL);
    if (last_line && *last_line) { /* after the guest's last output, which may end mid-line */
        if (!l->at_line_end)
            log_write(l, "\n", 1);
        log_write(l, last_line, strlen(last_line));
    }
    dup2(l->cur_fd, STDERR_FILENO);
    struct stat st;
    if (fstat(l->old_fd, &st) == 0 && st.st_size == 0)
        unlinkat(l->dir_fd, l->old_name, 0); /* never rotated: no clutter */
    if (null >= 0)
        close(null);
    log_free(l);
}
