/* The block layer's common part: the public functions of block/block.h (range checks,
 * read-only enforcement, creation), which dispatch to the drivers; error messages and
 * events; iovec helpers. Opening, probing and backing chains are in open.c, locks in lock.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blk_int.h"
#include "common/util.h"
#include "block/qcow2.h"

int blk_set_err(struct blk *b, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->errmsg, sizeof(b->errmsg), fmt, ap);
    va_end(ap);
    return err;
}

void blk_event(struct blk *b, const char *fmt, ...)
{
    if (!b->event_fn)
        return;
    char msg[BLK_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    b->event_fn(b->event_opaque, msg);
}

void blk_set_event_fn(struct blk *b, void (*fn)(void *opaque, const char *msg), void *opaque)
{
    b->event_fn = fn;
    b->event_opaque = opaque;
}

const char *blk_errmsg(const struct blk *b)
{
    return b->errmsg;
}

int file_pread(int fd, void *buf, size_t len, uint64_t off)
{
    return pread_full(fd, buf, len, off, true);
}

int file_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    return pwrite_full(fd, buf, len, off);
}

/* Walks the iovec from byte SKIP, calling FN on each piece of a LEN-byte range. */
static void iov_walk(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
                     void (*fn)(void *iov_base, size_t n, void *arg, size_t done), void *arg)
{
    size_t done = 0;
    for (int i = 0; i < iovcnt && done < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - skip;
        if (n > len - done)
            n = len - done;
        fn((char *)iov[i].iov_base + skip, n, arg, done);
        done += n;
        skip = 0;
    }
}

static void from_buf(void *base, size_t n, void *arg, size_t done)
{
    memcpy(base, (const char *)arg + done, n);
}
static void to_buf(void *base, size_t n, void *arg, size_t done)
{
    memcpy((char *)arg + done, base, n);
}
static void fill(void *base, size_t n, void *arg, size_t done)
{
    memset(base, *(int *)arg, n);
    (void)done;
}

void iov_from_buf(const struct iovec *iov, int iovcnt, size_t skip, const void *buf, size_t len)
{
    iov_walk(iov, iovcnt, skip, len, from_buf, (void *)buf);
}

void iov_to_buf(const struct iovec *iov, int iovcnt, size_t skip, void *buf, size_t len)
{
    iov_walk(iov, iovcnt, skip, len, to_buf, buf);
}

void iov_memset(const struct iovec *iov, int iovcnt, size_t skip, int c, size_t len)
{
    iov_walk(iov, iovcnt, skip, len, fill, &c);
}

int blk_map(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
            int *fd, uint64_t *host)
{
    uint64_t end;
    if (!b->ops->map || len == 0 || __builtin_add_overflow(off, len, &end) || end > b->size ||
        (write && !(b->flags & BLK_O_RDWR)))
        return 0;
    return b->ops->map(b, iov, iovcnt, off, len, write, fd, host);
}

void blk_map_done(struct blk *b, bool write)
{
    if (b->ops->map_done)
        b->ops->map_done(b, write);
}

int blk_raw_flush_fd(const struct blk *b)
{
    return b->ops == &blk_raw_ops ? b->fd : -1;
}

int blk_data_fd(const struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
    if (b->dfd < 0 || ((off | len) & 4095))
        return b->fd;
    for (int i = 0; i < iovcnt; i++)
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & 4095)
            return b->fd;
    return b->dfd;
}

static size_t iov_size(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

static int check_range(struct blk *b, uint64_t off, uint64_t len)
{
    if (off > b->size || len > b->size - off)
        return blk_set_err(b, -EINVAL, "request %llu+%llu is beyond the end of %s (%llu bytes)",
                           (unsigned long long)off, (unsigned long long)len, b->path,
                           (unsigned long long)b->size);
    return 0;
}

int blk_preadv(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off)
{
    uint64_t len = iov_size(iov, iovcnt);
    int r = check_range(b, off, len);
    return r < 0 || len == 0 ? r : b->ops->preadv(b, iov, iovcnt, off, len);
}

int blk_pwritev(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off)
{
    uint64_t len = iov_size(iov, iovcnt);
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    int r = check_range(b, off, len);
    return r < 0 || len == 0 ? r : b->ops->pwritev(b, iov, iovcnt, off, len);
}

int blk_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
    struct iovec v = { buf, len };
    return blk_preadv(b, &v, 1, off);
}

int blk_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
    struct iovec v = { (void *)buf, len };
    return blk_pwritev(b, &v, 1, off);
}

int blk_flush(struct blk *b)
{
    return b->flags & BLK_O_RDWR ? b->ops->flush(b) : 0;
}

int blk_discard(struct blk *b, uint64_t off, uint64_t len)
{
    int r = check_range(b, off, len);
    if (r < 0)
        return r;
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return b->ops->discard ? b->ops->discard(b, off, len) : 0;
}

int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
    int r = check_range(b, off, len);
    if (r < 0)
        return r;
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return b->ops->write_zeroes(b, off, len, flags);
}

int blk_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    if (!b->ops->write_compressed)
        return blk_set_err(b, -ENOTSUP, "%s format cannot compress", b->ops->name);
    int r = check_range(b, off, len);
    return r < 0 ? r : b->ops->write_compressed(b, off, buf, len);
}

uint64_t blk_length(const struct blk *b)
{
    return b->size;
}

bool blk_is_readonly(const struct blk *b)
{
    return !(b->flags & BLK_O_RDWR);
}

int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, unsigned *status,
                     uint64_t *host_off)
{
    int r = check_range(b, off, len);
    if (r < 0)
        return r;
    *host_off = 0;
    return b->ops->block_status(b, off, len, pnum, status, host_off);
}

struct blk *blk_backing(const struct blk *b)
{
    return b->backing;
}

int blk_get_info(struct blk *b, struct blk_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->format, sizeof(info->format), "%s", b->ops->name);
    snprintf(info->filename, sizeof(info->filename), "%s", b->path);
    info->virtual_size = b->size;
    struct stat st;
    if (fstat(b->fd, &st) == 0)
        info->disk_size = (uint64_t)st.st_blocks * 512;
    return b->ops->info ? b->ops->info(b, info) : 0;
}

int blk_create(const char *path, const char *format, uint64_t size, const struct blk_create_opts *opts,
               char *err, size_t errlen)
{
    struct blk_create_opts none = { 0 };
    const struct blk_ops *ops = blk_driver(format);
    if (!ops) {
        snprintf(err, errlen, "unknown image format '%s' (raw or qcow2)", format);
        return -EINVAL;
    }
    int fd;
    bool created;
    int r = blk_create_open(path, &fd, &created, err, errlen);
    if (r < 0)
        return r;
    r = ops->create(fd, path, size, opts ? opts : &none, err, errlen);
    if (r == 0 && fsync(fd) < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-r));
    }
    close(fd); /* the lock goes with it */
    if (r < 0 && created)
        unlink(path);
    return r;
}

int blk_check(struct blk *b, unsigned repair, struct blk_check_result *res)
{
    memset(res, 0, sizeof(*res));
    if (repair && !(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return b->ops->check ? b->ops->check(b, repair, res) : 0;
}

int blk_truncate(struct blk *b, uint64_t size, bool shrink)
{
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    if (size < b->size && !shrink)
        return blk_set_err(b, -EINVAL, "shrinking %s needs --shrink", b->path);
    return b->ops->truncate(b, size, shrink);
}

int blk_set_backing(struct blk *b, const char *file, const char *fmt)
{
    if (!b->ops->set_backing)
        return blk_set_err(b, -ENOTSUP, "%s images have no backing file", b->ops->name);
    return b->ops->set_backing(b, file, fmt);
}

/* Internal snapshots are qcow2's (block/qcow2_snapshot.c). */
static bool is_qcow2(struct blk *b)
{
    return b->ops == &blk_qcow2_ops;
}

int blk_snapshot_list(struct blk *b, struct blk_snapshot *out, int max)
{
    return is_qcow2(b) ? qcow2_snapshot_list(b, out, max) : 0;
}

int blk_snapshot_create(struct blk *b, const char *name)
{
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return is_qcow2(b) ? qcow2_snapshot_create(b, name)
                       : blk_set_err(b, -ENOTSUP, "only qcow2 images have snapshots");
}

int blk_snapshot_apply(struct blk *b, const char *id_or_name)
{
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return is_qcow2(b) ? qcow2_snapshot_apply(b, id_or_name)
                       : blk_set_err(b, -ENOTSUP, "only qcow2 images have snapshots");
}

int blk_snapshot_delete(struct blk *b, const char *id_or_name)
{
    if (!(b->flags & BLK_O_RDWR))
        return blk_set_err(b, -EROFS, "%s is open read-only", b->path);
    return is_qcow2(b) ? qcow2_snapshot_delete(b, id_or_name)
                       : blk_set_err(b, -ENOTSUP, "only qcow2 images have snapshots");
}
