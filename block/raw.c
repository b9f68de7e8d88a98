/* Raw images: the file is the disk. Holes read as zeroes; discard and write-zeroes punch
 * holes where the file system can. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/blk_int.h"

/* A disk is whole 512-byte sectors: a file whose size is not a multiple of 512 shows its
 * last sector whole, as QEMU does. Reads past the end of the file return zeroes; a write to
 * the partial sector extends the file to the sector's end (QEMU's behaviour, checked with
 * qemu-io). */
static uint64_t round_sector(uint64_t size)
{
    return size > UINT64_MAX - 511 ? size & ~511ULL : (size + 511) & ~511ULL;
}

static int raw_open(struct blk *b, int flags, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(b->fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(b->fd, 0, SEEK_END);
        b->size = end > 0 ? (uint64_t)end : 0;
    } else {
        b->size = round_sector((uint64_t)st.st_size);
    }
    return 0;
}

static void raw_close(struct blk *b)
{
}

static int raw_preadv(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
    /* preadv may return short at EOF of a growing file or on signals: finish the rest. */
    uint64_t done = 0;
    while (done < len) {
        ssize_t n;
        if (done == 0) {
            n = preadv(blk_data_fd(b, iov, iovcnt, off, len), iov, iovcnt, (off_t)off);
        } else {
            uint8_t *tmp = malloc(len - done);
            if (!tmp)
                return -ENOMEM;
            int r = file_pread(b->fd, tmp, len - done, off + done);
            if (r == 0)
                iov_from_buf(iov, iovcnt, done, tmp, len - done);
            free(tmp);
            return r;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return blk_set_err(b, -errno, "read %s: %s", b->path, strerror(errno));
        if (n == 0) { /* beyond EOF: zeroes */
            iov_memset(iov, iovcnt, done, 0, len - done);
            return 0;
        }
        done += (uint64_t)n;
    }
    return 0;
}

static int raw_pwritev(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
    ssize_t n;
    do
        n = pwritev(blk_data_fd(b, iov, iovcnt, off, len), iov, iovcnt, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return blk_set_err(b, -errno, "write %s: %s", b->path, strerror(errno));
    if ((uint64_t)n < len) { /* rare: finish through a bounce buffer */
        uint8_t *tmp = malloc(len - (uint64_t)n);
        if (!tmp)
            return -ENOMEM;
        iov_to_buf(iov, iovcnt, (size_t)n, tmp, len - (uint64_t)n);
        int r = file_pwrite(b->fd, tmp, len - (uint64_t)n, off + (uint64_t)n);
        free(tmp);
        return r;
    }
    return 0;
}

static int raw_map(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
                   int *fd, uint64_t *host)
{
    *fd = blk_data_fd(b, iov, iovcnt, off, len);
    *host = off;
    return 1;
}

static int raw_flush(struct blk *b)
{
    return fdatasync(b->fd) < 0 ? blk_set_err(b, -errno, "flush %s: %s", b->path, strerror(errno)) : 0;
}

static int raw_discard(struct blk *b, uint64_t off, uint64_t len)
{
    if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0 &&
        errno != EOPNOTSUPP)
        return blk_set_err(b, -errno, "discard on %s: %s", b->path, strerror(errno));
    return 0;
}

static int raw_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
    if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if ((flags & BLK_ZERO_MAY_UNMAP) &&
        fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    /* Not const: in .bss it costs nothing until read (the kernel's zero page), where in
     * .rodata it was 64 KiB of the binary that every run mapped with its neighbours. */
    static uint8_t zeroes[65536];
    for (uint64_t done = 0; done < len;) {
        size_t n = len - done < sizeof(zeroes) ? (size_t)(len - done) : sizeof(zeroes);
        int r = file_pwrite(b->fd, zeroes, n, off + done);
        if (r < 0)
            return blk_set_err(b, r, "write %s: %s", b->path, strerror(-r));
        done += n;
    }
    return 0;
}

/* Data or hole, from SEEK_DATA/SEEK_HOLE. */
static int raw_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, unsigned *status,
                            uint64_t *host_off)
{
    off_t data = lseek(b->fd, (off_t)off, SEEK_DATA);
    *host_off = off;
    if (data < 0 || (uint64_t)data >= off + len) { /* a hole to the end of the range */
        *pnum = len;
        *status = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
        return 0;
    }
    if ((uint64_t)data > off) {
        *pnum = (uint64_t)data - off;
        *status = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
        return 0;
    }
    off_t hole = lseek(b->fd, (off_t)off, SEEK_HOLE);
    uint64_t end = hole < 0 ? off + len : (uint64_t)hole;
    *pnum = (end > off + len ? off + len : end) - off;
    *status = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    return 0;
}

static int raw_create(int fd, const char *path, uint64_t size, const struct blk_create_opts *o, char *err,
                      size_t errlen)
{
    if (o->backing_file) {
        snprintf(err, errlen, "raw images cannot have a backing file");
        return -EINVAL;
    }
    /* Old contents go: the size alone keeps them (extending a file reads as zeroes). */
    size = round_sector(size); /* as qemu-img create */
    if (size > INT64_MAX || ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
        int r = -errno;
        snprintf(err, errlen, "cannot size %s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}

static int raw_truncate(struct blk *b, uint64_t size, bool shrink)
{
    if (size > INT64_MAX || ftruncate(b->fd, (off_t)size) < 0)
        return blk_set_err(b, size > INT64_MAX ? -EFBIG : -errno, "resize %s: %s", b->path,
                           strerror(size > INT64_MAX ? EFBIG : errno));
    b->size = round_sector(size); /* the file keeps the exact size, as with qemu-img resize */
    return 0;
}

static int raw_probe(const uint8_t *head, size_t len)
{
    return 0; /* raw is what is left when nothing else matches */
}

const struct blk_ops blk_raw_ops = {
    .name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .preadv = raw_preadv,
    .pwritev = raw_pwritev,
    .flush = raw_flush,
    .map = raw_map,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .block_status = raw_block_status,
    .create = raw_create,
    .truncate = raw_truncate,
};
