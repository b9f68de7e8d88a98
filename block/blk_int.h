/* Inside the block layer: the driver interface behind block/block.h. One struct blk_ops per
 * format (raw.c, qcow2.c); what is common is in block.c (dispatch, messages), open.c
 * (opening, probing, backing chains) and lock.c (image locks). */
#ifndef KVMBOX_BLK_INT_H
#define KVMBOX_BLK_INT_H

#include <pthread.h>
#include <sys/types.h>

#include "block/block.h"

struct blk_ops {
    const char *name;
    int (*probe)(const uint8_t *head, size_t len); /* 1 when HEAD is this format */
    int (*open)(struct blk *b, int flags, char *err, size_t errlen);
    void (*close)(struct blk *b);
    int (*preadv)(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len);
    int (*pwritev)(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len);
    int (*flush)(struct blk *b);
    int (*discard)(struct blk *b, uint64_t off, uint64_t len);
    int (*write_zeroes)(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
    int (*write_compressed)(struct blk *b, uint64_t off, const void *buf, size_t len);
    int (*block_status)(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, unsigned *status,
                        uint64_t *host_off);
    int (*info)(struct blk *b, struct blk_info *info);
    /* Writes a new image into FD (open, locked for writing, not yet truncated: the driver
     * validates its options first, then truncates). PATH is for messages. */
    int (*create)(int fd, const char *path, uint64_t size, const struct blk_create_opts *o, char *err,
                  size_t errlen);
    int (*check)(struct blk *b, unsigned repair, struct blk_check_result *res);
    int (*truncate)(struct blk *b, uint64_t size, bool shrink);
    int (*set_backing)(struct blk *b, const char *file, const char *fmt);
    /* Optional: see blk_map() in block.h. */
    int (*map)(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
               int *fd, uint64_t *host);
    void (*map_done)(struct blk *b, bool write);
    /* Optional: the backing file name as the image records it (NULL or "": none) and, in
     * *FMT, its recorded format (NULL or "": not recorded). */
    const char *(*backing_name)(struct blk *b, const char **fmt);
};

struct blk {
    const struct blk_ops *ops;
    char *path;
    int fd;  /* buffered: metadata and anything unaligned */
    int dfd; /* O_DIRECT (cache=none) for aligned data, else == fd */
    int flags;
    uint64_t size;       /* virtual size */
    struct blk *backing; /* opened backing file, or NULL */
    dev_t dev;           /* the file's identity, for loops in backing chains */
    ino_t ino;
    pthread_mutex_t lock; /* serialises driver metadata */
    char errmsg[BLK_ERRMSG_MAX];
    void (*event_fn)(void *opaque, const char *msg);
    void *event_opaque;
    void *priv; /* the driver's state */
};

extern const struct blk_ops blk_raw_ops, blk_qcow2_ops;

/* The driver named NAME ("raw", "qcow2"), or NULL. */
const struct blk_ops *blk_driver(const char *name);
/* Takes the image lock on FD (block/lock.c: QEMU's byte-range protocol, so kvmbox and QEMU
 * exclude each other): a reader's, or with WRITE a writer's. 0 (also on file systems
 * without OFD locks), -EBUSY with ERR naming the conflict, or another -errno. */
int blk_lock_fd(int fd, bool write, const char *path, char *err, size_t errlen);
/* Opens PATH for creating an image: created if missing, never truncated here, refused
 * unless it is a regular file, and locked as a writer before the caller truncates it (an
 * image in use by a VM is left alone). *CREATED says whether the file is new. */
int blk_create_open(const char *path, int *fd, bool *created, char *err, size_t errlen);
/* Copies LEN bytes from a flat buffer into an iovec at byte offset SKIP, and back. */
void iov_from_buf(const struct iovec *iov, int iovcnt, size_t skip, const void *buf, size_t len);
void iov_to_buf(const struct iovec *iov, int iovcnt, size_t skip, void *buf, size_t len);
void iov_memset(const struct iovec *iov, int iovcnt, size_t skip, int c, size_t len);
int blk_set_err(struct blk *b, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Tells B's event function (blk_set_event_fn), if any. */
void blk_event(struct blk *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pread/pwrite that retry short transfers; a read past EOF yields zeroes. */
int file_pread(int fd, void *buf, size_t len, uint64_t off);
int file_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* The fd for a data transfer: the O_DIRECT one when buffers, offset and length are all
 * 4 KiB-aligned, the buffered one otherwise. */
int blk_data_fd(const struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len);

#endif
