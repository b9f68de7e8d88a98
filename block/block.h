/* kvmbox block layer: one interface over raw and qcow2 images.
 *
 * Everything format-specific lives behind struct blk_ops in the drivers (block/raw.c,
 * block/qcow2*.c). Callers (virtio-blk, `kvmbox img`) use only the functions below.
 * All functions return 0 (or a non-negative count where stated) on success and a negative
 * errno on failure; where an error message is useful, the handle keeps the last one in
 * blk_errmsg(). A handle is safe to use from several threads: the drivers serialise
 * metadata updates internally. Images are hostile input: every on-disk structure is validated
 * before use, a corrupt image fails I/O with -EIO (and is reported by blk_check), never more.
 */
#ifndef KVMBOX_BLOCK_H
#define KVMBOX_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct blk;

/* blk_open flags */
#define BLK_O_RDWR        0x01 /* open for writing (takes an OFD write lock) */
#define BLK_O_DIRECT      0x02 /* cache=none: O_DIRECT on the image files */
#define BLK_O_NO_BACKING  0x04 /* do not open the backing chain (info, rebase -u) */
#define BLK_O_NO_LOCK     0x08 /* do not take the image lock */
#define BLK_O_FORCE_SHARE 0x10 /* read an image someone else holds (like qemu-img -U) */
#define BLK_O_UNORDERED \
    0x20 /* no ordering syncs between metadata writes: for writing a new
                                * image (convert) that is useless if interrupted anyway; a
                                * final blk_flush still makes everything durable */

#define BLK_O_REPAIR \
    0x80 /* open an image marked corrupt for writing, to repair it
                                * (check -r); a repair that leaves no corruption clears the mark */
#define BLK_O_UNTRUSTED \
    0x40 /* the image is hostile: follow no backing file it names, only
                                * the one the caller names (blk_open_opts.backing) */

#define BLK_ERRMSG_MAX 512
/* Backing chains may be this deep (QEMU 7.2's qemu-img convert handles 1000 and crashes at
 * 2000); the chain is opened and read without recursion. */
#define BLK_MAX_CHAIN 4096

/* Open PATH. FORMAT is "raw", "qcow2" or NULL to probe (a probe that finds raw sets
 * *probed_raw so the caller can warn like qemu does). On failure *out is NULL and ERR
 * (if given) holds one line naming the problem. */
int blk_open(const char *path, const char *format, int flags, struct blk **out, bool *probed_raw, char *err,
             size_t errlen);
/* blk_open with everything that can be said about it. */
struct blk_open_opts {
    const char *format;         /* "raw", "qcow2" or NULL to probe */
    int flags;                  /* BLK_O_* */
    const char *backing;        /* BLK_O_UNTRUSTED: the backing file allowed for an image that
                                  * names one (whatever name the image records); that file's own
                                  * backing files are not followed. NULL: none allowed. */
    const char *backing_format; /* its format; NULL: probed (and warned about) */
    /* Warnings, one line each: a backing file whose format is not recorded was probed.
     * NULL: none. Called during the open, from the caller's thread. */
    void (*warn)(void *opaque, const char *msg);
    void *warn_opaque;
};
int blk_open_opts(const char *path, const struct blk_open_opts *o, struct blk **out, bool *probed_raw,
                  char *err, size_t errlen);
/* Where an image at IMAGE (the path as given) finds the backing file it names NAME: NAME
 * when it is absolute or IMAGE has no directory part, else NAME in IMAGE's directory as
 * given - not a symlink target's (QEMU's rule). The one resolver for `run` and `img`. */
void blk_backing_path(const char *image, const char *name, char *out, size_t len);
void blk_close(struct blk *b);
const char *blk_errmsg(const struct blk *b);

/* Data path. Offsets and lengths in bytes, any alignment (drivers handle read-modify-write).
 * Reads beyond the virtual size fail with -EINVAL; short transfers do not happen. */
int blk_preadv(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t offset);
int blk_pwritev(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t offset);
int blk_pread(struct blk *b, void *buf, size_t len, uint64_t offset);
int blk_pwrite(struct blk *b, const void *buf, size_t len, uint64_t offset);
/* Returns only when data and metadata written before it are on stable storage. */
int blk_flush(struct blk *b);
/* Deallocate if the format can; reads of the range may then return anything the format
 * defines (zeroes for qcow2 v3 and raw holes, backing data for qcow2 v2). */
int blk_discard(struct blk *b, uint64_t offset, uint64_t len);
#define BLK_ZERO_MAY_UNMAP 0x1
int blk_write_zeroes(struct blk *b, uint64_t offset, uint64_t len, unsigned flags);
/* Write one whole cluster compressed (qcow2 only; -ENOTSUP elsewhere). */
int blk_write_compressed(struct blk *b, uint64_t offset, const void *buf, size_t len);
uint64_t blk_length(const struct blk *b);
/* For callers with their own asynchronous I/O (virtio-blk's io_uring path). Returns 1 when
 * [off, off+len) is one run of bytes of one file that may be read (or, with WRITE,
 * overwritten in place) directly: *FD (the O_DIRECT one for cache=none when IOV, the offset
 * and the length are 4 KiB-aligned) at *HOST. Raw images always map; qcow2 maps data
 * clusters this image owns outright, contiguous on the host (not zero, compressed, shared
 * with a snapshot or in the backing file). A mapped write holds the clusters against being
 * freed or shared until blk_map_done(B, true); call blk_map_done after every mapped transfer.
 * Returns 0 when the range needs blk_preadv/blk_pwritev, or a negative errno. */
int blk_map(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
            int *fd, uint64_t *host);
void blk_map_done(struct blk *b, bool write);
/* The file descriptor a raw image's FLUSH can fdatasync directly; -1 for other formats
 * (their flush also writes metadata back: use blk_flush). */
int blk_raw_flush_fd(const struct blk *b);
bool blk_is_readonly(const struct blk *b);
/* Events of B the host should hear of (an image found corrupt and fenced off: its I/O fails
 * from then on), one line each. FN is called from the thread that found it, with the
 * image's lock held: it must not call into B. Set it right after the open. */
void blk_set_event_fn(struct blk *b, void (*fn)(void *opaque, const char *msg), void *opaque);

/* Allocation status of [offset, offset+len) in this image (not its backing chain):
 * returns the status of the longest run starting at offset in *pnum bytes. */
#define BLK_STATUS_DATA       0x1 /* reads come from this layer's storage */
#define BLK_STATUS_ZERO       0x2 /* reads as zeroes */
#define BLK_STATUS_ALLOCATED  0x4 /* decided by this layer (else: by the backing file) */
#define BLK_STATUS_COMPRESSED 0x8
int blk_block_status(struct blk *b, uint64_t offset, uint64_t len, uint64_t *pnum, unsigned *status,
                     uint64_t *host_offset);
struct blk *blk_backing(const struct blk *b); /* NULL when none or not opened */

struct blk_info {
    char format[16]; /* "raw" or "qcow2" */
    char filename[4096];
    uint64_t virtual_size;
    uint64_t disk_size;    /* bytes allocated on the host file system */
    uint32_t cluster_size; /* 0 for raw */
    int qcow2_version;     /* 2 or 3; 0 for raw */
    uint32_t refcount_bits;
    bool dirty, corrupt, lazy_refcounts, compression_deflate;
    char backing_file[4096]; /* as written in the image */
    char backing_path[4096]; /* resolved against the image's directory */
    char backing_format[16];
    int nb_snapshots;
};
int blk_get_info(struct blk *b, struct blk_info *info);

/* Creation */
struct blk_create_opts {
    uint32_t cluster_size;  /* 0: 64 KiB */
    int qcow2_version;      /* 0: 3 */
    uint32_t refcount_bits; /* 0: 16 */
    bool lazy_refcounts;
    const char *backing_file; /* NULL: none; stored as given */
    const char *backing_format;
    bool preallocate_metadata;
};
/* SIZE 0 with a backing file means "the backing file's size". */
int blk_create(const char *path, const char *format, uint64_t size, const struct blk_create_opts *opts,
               char *err, size_t errlen);

/* Internal snapshots (qcow2) */
struct blk_snapshot {
    char id[128];
    char name[256];
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t disk_size;
};
/* Fills up to max entries; returns the number of snapshots (may exceed max). */
int blk_snapshot_list(struct blk *b, struct blk_snapshot *out, int max);
int blk_snapshot_create(struct blk *b, const char *name);
int blk_snapshot_apply(struct blk *b, const char *id_or_name);
int blk_snapshot_delete(struct blk *b, const char *id_or_name);

/* Consistency check (qcow2; raw has nothing to check). */
#define BLK_REPAIR_LEAKS  0x1
#define BLK_REPAIR_ERRORS 0x2
struct blk_check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t allocated_clusters, total_clusters, fragmented_clusters, compressed_clusters;
    uint64_t image_end_offset;
    char first_problem[BLK_ERRMSG_MAX];
};
int blk_check(struct blk *b, unsigned repair, struct blk_check_result *res);

int blk_truncate(struct blk *b, uint64_t new_size, bool allow_shrink);
/* Rewrite the backing file name in the header only (rebase -u, commit). */
int blk_set_backing(struct blk *b, const char *backing_file, const char *backing_format);

#endif
