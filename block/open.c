/* Opening images and their backing chains: the file (never blocking, only the kinds of file
 * an image may be), the format (given or probed), the lock, the driver, then the backing
 * files one after the other (no recursion: chains may be deep), each checked against every
 * file already in the chain by identity, so a loop is found however it is spelled. In
 * untrusted mode no backing file the image names is followed: only one the caller names. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blk_int.h"

static const struct blk_ops *const drivers[] = { &blk_qcow2_ops, &blk_raw_ops };

const struct blk_ops *blk_driver(const char *name)
{
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
        if (!strcmp(drivers[i]->name, name))
            return drivers[i];
    return NULL;
}

static const struct blk_ops *probe(int fd, bool *probed)
{
    uint8_t head[512];
    if (file_pread(fd, head, sizeof(head), 0) < 0)
        memset(head, 0, sizeof(head));
    *probed = true;
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
        if (drivers[i]->probe && drivers[i]->probe(head, sizeof(head)))
            return drivers[i];
    return &blk_raw_ops;
}

void blk_backing_path(const char *image, const char *name, char *out, size_t len)
{
    const char *slash = strrchr(image, '/');
    if (name[0] == '/' || !slash)
        snprintf(out, len, "%s", name);
    else
        snprintf(out, len, "%.*s/%s", (int)(slash - image), image, name);
}

/* Opens PATH's file: O_NONBLOCK so that a FIFO cannot hang the open, then the kind of file
 * is checked on the open descriptor (no window between a stat and the open). Backing files
 * must be regular files; an image the caller names may also be a block device (as QEMU
 * allows). The O_DIRECT descriptor is the same file, reopened through /proc. */
static int open_file(struct blk *b, const char *path, bool backing, char *err, size_t errlen)
{
    int oflags = (b->flags & BLK_O_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    b->fd = open(path, oflags | O_NONBLOCK);
    if (b->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(b->fd, &st) < 0 || fcntl(b->fd, F_SETFL, fcntl(b->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    b->dev = st.st_dev, b->ino = st.st_ino;
    if (S_ISDIR(st.st_mode))
        return snprintf(err, errlen, "%s is a directory", path), -EISDIR;
    if (backing && !S_ISREG(st.st_mode))
        return snprintf(err, errlen, "%s is not a regular file (backing files must be)", path), -EINVAL;
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return snprintf(err, errlen, "%s is not a regular file or a block device", path), -EINVAL;
    if (b->flags & BLK_O_DIRECT) {
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", b->fd);
        b->dfd = open(self, oflags | O_DIRECT);
        if (b->dfd < 0) {
            int e = errno;
            snprintf(err, errlen, "cannot open %s with cache=none (O_DIRECT): %s", path, strerror(e));
            return -e;
        }
    }
    return 0;
}

/* The layer of TOP's chain that is the same file as NEW, or NULL. */
static const struct blk *same_file(const struct blk *top, const struct blk *new)
{
    for (const struct blk *l = top; l; l = l->backing)
        if (l != new && l->dev == new->dev && l->ino == new->ino)
            return l;
    return NULL;
}

/* One image, without its backing file. *PROBED says whether the format was probed. A
 * backing file that is already in TOP's chain is refused (-ELOOP, *AGAIN the layer it
 * repeats) before it is locked: its lock would clash with the chain's own. */
static int open_one(const char *path, const char *format, int flags, const struct blk *top, struct blk **out,
                    bool *probed, const struct blk **again, char *err, size_t errlen)
{
    *out = NULL;
    *probed = false;
    struct blk *b = calloc(1, sizeof(*b));
    if (!b || !(b->path = strdup(path))) {
        free(b);
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    }
    b->flags = flags;
    b->fd = b->dfd = -1;
    pthread_mutex_init(&b->lock, NULL);
    int r = open_file(b, path, top != NULL, err, errlen);
    if (r < 0)
        goto fail;
    if (top && (*again = same_file(top, b))) {
        r = -ELOOP;
        goto fail;
    }
    b->ops = format ? blk_driver(format) : probe(b->fd, probed);
    if (!b->ops) {
        r = -EINVAL;
        snprintf(err, errlen, "unknown image format '%s' (raw or qcow2)", format);
        goto fail;
    }
    if (!(flags & (BLK_O_NO_LOCK | BLK_O_FORCE_SHARE)) &&
        (r = blk_lock_fd(b->fd, flags & BLK_O_RDWR, path, err, errlen)) < 0)
        goto fail;
    if ((r = b->ops->open(b, flags, err, errlen)) < 0) {
        b->ops->close(b); /* frees what a half-done open allocated */
        b->ops = NULL;
        goto fail;
    }
    *out = b;
    return 0;
fail:
    blk_close(b);
    return r;
}

static void warn(const struct blk_open_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(const struct blk_open_opts *o, const char *fmt, ...)
{
    if (!o->warn)
        return;
    char msg[BLK_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    o->warn(o->warn_opaque, msg);
}

/* Where LAYER's backing file is and in which format, by the rules of O (untrusted: only the
 * caller's file, for the image the caller opened). 0 with *PATH empty: no backing file. */
static int backing_of(struct blk *top, struct blk *layer, const struct blk_open_opts *o, char *path,
                      size_t len, const char **fmt, char *err, size_t errlen)
{
    const char *name = layer->ops->backing_name ? layer->ops->backing_name(layer, fmt) : NULL;
    *path = 0;
    if (!name || !*name)
        return 0;
    if (!(o->flags & BLK_O_UNTRUSTED)) {
        blk_backing_path(layer->path, name, path, len);
        return 0;
    }
    if (layer != top)
        return snprintf(err, errlen,
                        "backing file %s names a backing file of its own (%s); in untrusted mode "
                        "only the backing file the caller names is opened",
                        layer->path, name),
               -EPERM;
    if (!o->backing || !*o->backing)
        return snprintf(err, errlen,
                        "%s names a backing file (%s); in untrusted mode none is opened unless the "
                        "caller names it",
                        top->path, name),
               -EPERM;
    snprintf(path, len, "%s", o->backing);
    *fmt = o->backing_format; /* the image's record of it is as untrusted as the name */
    return 0;
}

/* Opens the backing files below TOP, one after the other. */
static int open_chain(struct blk *top, const struct blk_open_opts *o, char *err, size_t errlen)
{
    int flags = (o->flags & (BLK_O_DIRECT | BLK_O_FORCE_SHARE | BLK_O_UNTRUSTED)); /* read-only, shared */
    unsigned depth = 0;
    for (struct blk *l = top;; l = l->backing) {
        char path[4096], sub[BLK_ERRMSG_MAX];
        const char *fmt = NULL;
        int r = backing_of(top, l, o, path, sizeof(path), &fmt, err, errlen);
        if (r < 0 || !*path)
            return r;
        if (++depth > BLK_MAX_CHAIN)
            return snprintf(err, errlen, "backing chain of %s has more than %d backing files", top->path,
                            BLK_MAX_CHAIN),
                   -ELOOP;
        bool probed;
        const struct blk *again = NULL;
        r = open_one(path, fmt && *fmt ? fmt : NULL, flags, top, &l->backing, &probed, &again, sub,
                     sizeof(sub));
        if (r == -ELOOP)
            return snprintf(err, errlen,
                            "backing chain of %s is a loop: the backing file of %s (%s) is %s again",
                            top->path, l->path, path, again->path),
                   r;
        if (r < 0)
            return snprintf(err, errlen, "backing file of %s: %s", l->path, sub), r;
        if (probed)
            warn(o,
                 "backing file %s: its format is not recorded in %s, so it was probed (%s); "
                 "`kvmbox img rebase -u -b NAME -F FORMAT` records it",
                 path, l->path, l->backing->ops->name);
    }
}

int blk_open_opts(const char *path, const struct blk_open_opts *o, struct blk **out, bool *probed_raw,
                  char *err, size_t errlen)
{
    char dummy[BLK_ERRMSG_MAX];
    if (!err)
        err = dummy, errlen = sizeof(dummy);
    *err = 0;
    bool probed;
    const struct blk *again;
    int r = open_one(path, o->format, o->flags, NULL, out, &probed, &again, err, errlen);
    if (r == 0 && probed_raw)
        *probed_raw = probed && (*out)->ops == &blk_raw_ops;
    if (r == 0 && !(o->flags & BLK_O_NO_BACKING) && (r = open_chain(*out, o, err, errlen)) < 0) {
        blk_close(*out);
        *out = NULL;
    }
    return r;
}

int blk_open(const char *path, const char *format, int flags, struct blk **out, bool *probed_raw, char *err,
             size_t errlen)
{
    struct blk_open_opts o = { .format = format, .flags = flags };
    return blk_open_opts(path, &o, out, probed_raw, err, errlen);
}

void blk_close(struct blk *b)
{
    while (b) { /* the chain, top down, without recursion */
        struct blk *next = b->backing;
        if (b->ops)
            b->ops->close(b);
        if (b->dfd >= 0)
            close(b->dfd);
        if (b->fd >= 0)
            close(b->fd);
        pthread_mutex_destroy(&b->lock);
        free(b->path);
        free(b);
        b = next;
    }
}
