/* qcow2 driver internals (QEMU's docs/interop/qcow2.txt). Split by concern; the prototypes
 * below are grouped under the file that defines them:
 *   qcow2.c           header, open/validate, create, info, resize, backing name, close;
 *                     the corrupt mark; blk_qcow2_ops
 *   qcow2_refcount.c  the table cache, refcount reads and updates, cluster allocation,
 *                     refcount-table growth
 *   qcow2_map.c       L1/L2 lookups, the read path, compressed reads, block status
 *   qcow2_write.c     the write path (in place or copy-on-write), blk_map, zero/discard,
 *                     compressed writes, dropping clusters (shrink)
 *   qcow2_meta.c      which host clusters hold metadata; every write checked against them
 *   qcow2_check.c     check and repair (qemu-img check), COPIED flags
 *   qcow2_snapshot.c  internal snapshots
 *   qcow2_fuzz.c      libFuzzer target (make fuzz-qcow2), not part of the library
 * On-disk tables are big-endian; caches keep them in that form. */
#ifndef KVMBOX_QCOW2_H
#define KVMBOX_QCOW2_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "block/blk_int.h"

#define QCOW2_MAGIC            0x514649fbu
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES     (32u << 20) /* as qemu: bounds what a header can make us allocate */
#define QCOW2_MAX_RCT_BYTES    (8u << 20)
#define QCOW2_MAX_SIZE         (1ULL << 56) /* 64 PiB: offsets are 56-bit */
#define QCOW2_MAX_SNAPSHOTS    65536        /* as qemu: open refuses more, so create does */

#define QCOW2_INCOMPAT_DIRTY        0x1ULL
#define QCOW2_INCOMPAT_CORRUPT      0x2ULL
#define QCOW2_INCOMPAT_DATA_FILE    0x4ULL
#define QCOW2_INCOMPAT_COMPRESSION  0x8ULL
#define QCOW2_INCOMPAT_EXTL2        0x10ULL
#define QCOW2_COMPAT_LAZY_REFCOUNTS 0x1ULL

#define QCOW2_EXT_END            0
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u

#define L1E_OFFSET_MASK       0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK       0x00fffffffffffe00ULL
#define QCOW_OFLAG_COPIED     (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW_OFLAG_ZERO       1ULL

#define CACHE_ENTRIES 16

struct table_cache {
    uint64_t offset[CACHE_ENTRIES]; /* 0: empty slot */
    uint64_t used[CACHE_ENTRIES];   /* LRU clock */
    uint8_t *data;                  /* CACHE_ENTRIES clusters */
    uint64_t clock;
};

struct qcow2 {
    uint32_t version, cluster_bits, cluster_size, l2_entries, header_length;
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1; /* big-endian, as on disk */
    uint64_t rct_offset;
    uint32_t rct_clusters;
    uint64_t rct_entries;
    uint64_t *rct; /* big-endian */
    uint32_t refcount_order, refcount_bits;
    uint64_t rb_entries; /* refcounts per refcount block */
    uint64_t refcount_max;
    uint64_t incompat, compat, autoclear;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    char backing_file[1024], backing_format[16];
    uint64_t file_end; /* where the next cluster is allocated */
    struct table_cache l2c, rbc;
    uint8_t *cbuf, *zbuf;         /* compressed-cluster and scratch buffers */
    uint64_t comp_next, comp_end; /* free bytes in the cluster compressed data goes to */
    struct qcow2_meta *meta;      /* metadata clusters (writable images; qcow2_meta.c) */
    unsigned inplace_inflight;    /* in-place writes running without the lock */
    pthread_cond_t inplace_done;
    bool corrupt;
};

static inline struct qcow2 *Q(struct blk *b)
{
    return b->priv;
}
static inline uint64_t be64(uint64_t v)
{
    return be64toh(v);
}
/* The sync that orders metadata writes (skipped for BLK_O_UNORDERED images). */
static inline int ordered_sync(struct blk *b)
{
    return (b->flags & BLK_O_UNORDERED) ? 0 : fdatasync(b->fd);
}

/* qcow2.c */
/* Fences the image off (its I/O fails with EIO), marks it corrupt in the header when it is
 * open for writing (v3), tells the host once (blk_event); returns -EIO with the message. */
int qcow2_mark_corrupt(struct blk *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* After a repair that left nothing corrupt: the mark goes. */
int qcow2_mark_consistent(struct blk *b);
int qcow2_write_header_field(struct blk *b, uint64_t off, const void *v, size_t len);
bool qcow2_offset_ok(struct blk *b, uint64_t off); /* cluster-aligned, inside the 56-bit space */
/* The one limit on virtual sizes, shared by open, create, resize and snapshots: the L1
 * table it needs fits QCOW2_MAX_L1_BYTES and offsets stay 56-bit. 0, or -EFBIG with ERR. */
int qcow2_size_ok(uint64_t size, unsigned cluster_bits, char *err, size_t errlen);
uint64_t qcow2_max_size(unsigned cluster_bits);

/* qcow2_refcount.c */
int qcow2_get_refcount(struct blk *b, uint64_t cluster, uint64_t *rc);
/* Entry IDX of a refcount block of BITS-bit entries (big-endian, as the spec packs them). */
void qcow2_refblock_set(uint8_t *blk, uint64_t idx, uint32_t bits, uint64_t v);
int qcow2_update_refcount(struct blk *b, uint64_t offset, int64_t delta);
/* Allocates N contiguous clusters at the end of the image, refcounts 1; returns the offset. */
int qcow2_alloc_clusters(struct blk *b, uint64_t n, uint64_t *offset);
/* Reads a cluster-sized table through CACHE (L2 tables and refcount blocks). */
int qcow2_cache_get(struct blk *b, struct table_cache *c, uint64_t offset, uint8_t **table);
void qcow2_cache_drop(struct table_cache *c, uint64_t offset);

/* qcow2_map.c: mapping and the read side */
#define QCOW2_MAX_SEGS 64
bool qcow2_entry_is_zero(struct qcow2 *q, uint64_t e);
/* Where guest offset OFF's L2 entry lives: the table's offset (0: none yet) and the index. */
int qcow2_l2_slot(struct blk *b, uint64_t off, uint64_t *l2_off, uint32_t *idx);
/* An iovec for LEN bytes of IOV from SKIP in OUT (QCOW2_MAX_SEGS); -1 when it needs more. */
int qcow2_iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len, struct iovec *out);
/* Reads with b->lock held; with UNLOCK_IO the lock is dropped around data reads. */
int qcow2_read_locked(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len,
                      bool unlock_io);
int qcow2_preadv(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len);
int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, unsigned *status,
                       uint64_t *host_off);
/* L2 entry for guest offset OFF (0 when the L1 entry is empty). */
int qcow2_get_l2_entry(struct blk *b, uint64_t off, uint64_t *entry);

/* qcow2_write.c: the write side */
int qcow2_pwritev(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len);
/* blk_map()/blk_map_done() for qcow2. */
int qcow2_map(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
              int *fd, uint64_t *host);
void qcow2_map_done(struct blk *b, bool write);
int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
int qcow2_discard(struct blk *b, uint64_t off, uint64_t len);
int qcow2_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len);
/* Makes the whole clusters in [off, off+len) unallocated, releasing their clusters. */
int qcow2_drop_clusters(struct blk *b, uint64_t off, uint64_t len);

/* Waits (b->lock held) until no in-place write runs unlocked: before a cluster is freed or
 * starts being shared. */
static inline void qcow2_wait_inplace(struct blk *b)
{
    while (Q(b)->inplace_inflight)
        pthread_cond_wait(&Q(b)->inplace_done, &b->lock);
}

/* qcow2_meta.c: the metadata clusters of a writable image, and every write checked
 * against them. Kinds: */
#define QCOW2_META_L2       1
#define QCOW2_META_REFBLOCK 2
#define QCOW2_META_FIXED    3 /* header, L1 tables, refcount table, snapshot table */
#define QCOW2_META_CONFLICT 4 /* two of the above in one cluster */
/* Builds the map from the image's tables (at open, for writing; after a rebuild). */
int qcow2_meta_build(struct blk *b);
void qcow2_meta_destroy(struct qcow2 *q);
/* Records LEN bytes at OFF as metadata of KIND (no-op without a map). */
int qcow2_meta_add(struct qcow2 *q, uint64_t off, uint64_t len, uint8_t kind);
/* A cluster whose refcount dropped to 0 is metadata no more. */
void qcow2_meta_free_cluster(struct qcow2 *q, uint64_t cluster);
/* The kind of the first metadata cluster in [off, off+len) (its offset in *WHERE), or 0. */
uint8_t qcow2_meta_find(const struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *where);
const char *qcow2_meta_name(uint8_t kind);
/* Before writing [off, off+len): 0 when it holds no metadata other than ALLOWED (0 for guest
 * data); else the image is marked corrupt (qcow2_mark_corrupt) and -EIO returned. */
int qcow2_meta_check_write(struct blk *b, uint64_t off, uint64_t len, uint8_t allowed);

/* qcow2_check.c */
/* Counts every reference and compares with the refcounts; REPAIR (BLK_REPAIR_*) fixes leaks
 * and errors. Results in RES. */
int qcow2_check(struct blk *b, unsigned repair, struct blk_check_result *res);
/* The active tree's COPIED flags against the refcounts: each mismatch is counted in RES
 * (corruptions, or corruptions_fixed when FIX rewrites the entry). */
int qcow2_sync_copied(struct blk *b, bool fix, struct blk_check_result *res);

/* qcow2_snapshot.c */
int qcow2_snapshot_list(struct blk *b, struct blk_snapshot *out, int max);
int qcow2_snapshot_create(struct blk *b, const char *name);
int qcow2_snapshot_apply(struct blk *b, const char *id_or_name);
int qcow2_snapshot_delete(struct blk *b, const char *id_or_name);

#endif
