/* qcow2: header, open and validation, creation, information, backing files. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/qcow2.h"

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}
static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}
static void wr32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}
static void wr64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

int qcow2_mark_corrupt(struct blk *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[BLK_ERRMSG_MAX - 64];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct qcow2 *q = Q(b);
    if (!q->corrupt) {
        /* Fenced off: I/O fails from now on, and an image open for writing is marked in its
         * header (v3: the corrupt bit; v2 has none), so that nothing writes to it until
         * `check -r all` has repaired it. The host hears of it once. */
        q->corrupt = true;
        bool marked = false;
        if ((b->flags & BLK_O_RDWR) && q->version >= 3) {
            uint64_t v = htobe64(q->incompat | QCOW2_INCOMPAT_CORRUPT);
            marked = file_pwrite(b->fd, &v, 8, 72) == 0 && fdatasync(b->fd) == 0;
            if (marked)
                q->incompat |= QCOW2_INCOMPAT_CORRUPT;
        }
        blk_event(b, "%s is corrupt: %s; its I/O fails from now on%s", b->path, msg,
                  marked ? " and it is marked corrupt (kvmbox img check -r all repairs it)" : "");
    }
    return blk_set_err(b, -EIO, "%s is corrupt: %s", b->path, msg);
}

int qcow2_mark_consistent(struct blk *b)
{
    struct qcow2 *q = Q(b);
    q->corrupt = false;
    if (!(q->incompat & QCOW2_INCOMPAT_CORRUPT))
        return 0;
    uint64_t v = htobe64(q->incompat & ~QCOW2_INCOMPAT_CORRUPT);
    int r = qcow2_write_header_field(b, 72, &v, 8);
    if (r == 0 && fdatasync(b->fd) < 0)
        r = -errno;
    if (r == 0)
        q->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
    return r;
}

bool qcow2_offset_ok(struct blk *b, uint64_t off)
{
    return off && !(off & (Q(b)->cluster_size - 1)) && off < QCOW2_MAX_SIZE;
}

int qcow2_size_ok(uint64_t size, unsigned cluster_bits, char *err, size_t errlen)
{
    /* One L1 entry maps an L2 table's worth: 2^cluster_bits clusters of 2^(cluster_bits-3)
     * entries each. Computed by division, as SIZE may be anything a header holds. */
    uint64_t per_l1 = 1ULL << (2 * cluster_bits - 3);
    uint64_t entries = size / per_l1 + (size % per_l1 != 0);
    if (size <= QCOW2_MAX_SIZE && entries <= QCOW2_MAX_L1_BYTES / 8)
        return 0;
    snprintf(err, errlen,
             "a virtual size of %llu bytes is too large for qcow2 with %u-byte clusters "
             "(at most %llu; a larger cluster size allows more)",
             (unsigned long long)size, 1u << cluster_bits, (unsigned long long)qcow2_max_size(cluster_bits));
    return -EFBIG;
}

uint64_t qcow2_max_size(unsigned cluster_bits)
{
    uint64_t by_l1 = (uint64_t)(QCOW2_MAX_L1_BYTES / 8) << (2 * cluster_bits - 3);
    return by_l1 < QCOW2_MAX_SIZE ? by_l1 : QCOW2_MAX_SIZE;
}

int qcow2_write_header_field(struct blk *b, uint64_t off, const void *v, size_t len)
{
    int r = file_pwrite(b->fd, v, len, off);
    return r < 0 ? blk_set_err(b, r, "writing the header of %s: %s", b->path, strerror(-r)) : 0;
}

static int qcow2_probe(const uint8_t *head, size_t len)
{
    return len >= 8 && rd32(head) == QCOW2_MAGIC && (rd32(head + 4) == 2 || rd32(head + 4) == 3);
}

/* Header extensions: only the backing format is used; the rest is preserved on disk
 * because kvmbox never rewrites the header area, only single fields. */
static int read_extensions(struct blk *b, const uint8_t *h, uint64_t start, uint64_t end, char *err,
                           size_t errlen)
{
    struct qcow2 *q = Q(b);
    for (uint64_t off = start; off + 8 <= end;) {
        uint32_t type = rd32(h + off), len = rd32(h + off + 4);
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - off - 8) {
            snprintf(err, errlen, "%s: header extension %#x runs past the header cluster", b->path, type);
            return -EINVAL;
        }
        if (type == QCOW2_EXT_BACKING_FORMAT && len < sizeof(q->backing_format))
            snprintf(q->backing_format, sizeof(q->backing_format), "%.*s", (int)len,
                     (const char *)h + off + 8);
        off += 8 + ((len + 7) & ~7u);
    }
    return 0;
}

static int validate_features(struct blk *b, const uint8_t *h, char *err, size_t errlen)
{
    struct qcow2 *q = Q(b);
    if (rd32(h + 32))
        return snprintf(err, errlen, "%s is encrypted; kvmbox does not support encrypted qcow2", b->path),
               -ENOTSUP;
    if (q->version < 3)
        return 0;
    if (q->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return snprintf(err, errlen, "%s uses an external data file, which kvmbox does not support", b->path),
               -ENOTSUP;
    if (q->incompat & QCOW2_INCOMPAT_EXTL2)
        return snprintf(err, errlen,
                        "%s uses extended L2 entries (subclusters), which kvmbox does not support", b->path),
               -ENOTSUP;
    if ((q->incompat & QCOW2_INCOMPAT_COMPRESSION) && q->header_length > 104 && h[104] != 0)
        return snprintf(err, errlen, "%s uses zstd compression; kvmbox supports deflate only", b->path),
               -ENOTSUP;
    uint64_t unknown = q->incompat &
                       ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION);
    if (unknown)
        return snprintf(err, errlen, "%s uses unknown incompatible features (%#llx)", b->path,
                        (unsigned long long)unknown),
               -ENOTSUP;
    if ((q->incompat & QCOW2_INCOMPAT_CORRUPT) && (b->flags & BLK_O_RDWR) && !(b->flags & BLK_O_REPAIR))
        return snprintf(err, errlen,
                        "%s is marked corrupt; it can only be opened read-only (kvmbox img check -r all "
                        "repairs it)",
                        b->path),
               -EIO;
    return 0;
}

static int parse_header(struct blk *b, const uint8_t *h, uint64_t file_size, char *err, size_t errlen)
{
    struct qcow2 *q = Q(b);
    if (rd32(h) != QCOW2_MAGIC)
        return snprintf(err, errlen, "%s is not a qcow2 image (bad magic)", b->path), -EINVAL;
    q->version = rd32(h + 4);
    if (q->version != 2 && q->version != 3)
        return snprintf(err, errlen, "%s: qcow2 version %u is not supported (2 or 3)", b->path, q->version),
               -ENOTSUP;
    q->cluster_bits = rd32(h + 20);
    if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return snprintf(err, errlen, "%s: cluster size 2^%u is outside 512 B..2 MiB", b->path,
                        q->cluster_bits),
               -EINVAL;
    q->cluster_size = 1u << q->cluster_bits;
    q->l2_entries = q->cluster_size / 8;
    b->size = rd64(h + 24);
    q->l1_size = rd32(h + 36);
    q->l1_offset = rd64(h + 40);
    q->rct_offset = rd64(h + 48);
    q->rct_clusters = rd32(h + 56);
    q->nb_snapshots = rd32(h + 60);
    q->snapshots_offset = rd64(h + 64);
    q->refcount_order = 4;
    q->header_length = 72;
    if (q->version >= 3) {
        q->incompat = rd64(h + 72), q->compat = rd64(h + 80), q->autoclear = rd64(h + 88);
        q->refcount_order = rd32(h + 96), q->header_length = rd32(h + 100);
        if (q->header_length < 104 || q->header_length > q->cluster_size)
            return snprintf(err, errlen, "%s: bad header length %u", b->path, q->header_length), -EINVAL;
    }
    if (q->refcount_order > 6)
        return snprintf(err, errlen, "%s: refcount order %u is above 6", b->path, q->refcount_order), -EINVAL;
    int r = validate_features(b, h, err, errlen);
    if (r < 0)
        return r;
    q->refcount_bits = 1u << q->refcount_order;
    q->rb_entries = (uint64_t)q->cluster_size * 8 / q->refcount_bits;
    q->refcount_max = q->refcount_bits == 64 ? UINT64_MAX : (1ULL << q->refcount_bits) - 1;
    char why[BLK_ERRMSG_MAX - 64];
    if (qcow2_size_ok(b->size, q->cluster_bits, why, sizeof(why)) < 0)
        return snprintf(err, errlen, "%s: %s", b->path, why), -EINVAL;
    uint64_t per_l1 = (uint64_t)q->cluster_size * q->l2_entries;
    uint64_t need = b->size / per_l1 + (b->size % per_l1 != 0);
    if ((uint64_t)q->l1_size * 8 > QCOW2_MAX_L1_BYTES || q->l1_size < need)
        return snprintf(err, errlen, "%s: L1 table of %u entries does not fit the virtual size", b->path,
                        q->l1_size),
               -EINVAL;
    if (q->l1_size &&
        (!qcow2_offset_ok(b, q->l1_offset) || q->l1_offset + (uint64_t)q->l1_size * 8 > file_size))
        return snprintf(err, errlen, "%s: L1 table offset %#llx is invalid or past the end of the file",
                        b->path, (unsigned long long)q->l1_offset),
               -EINVAL;
    if (!q->rct_clusters || (uint64_t)q->rct_clusters * q->cluster_size > QCOW2_MAX_RCT_BYTES ||
        !qcow2_offset_ok(b, q->rct_offset) ||
        q->rct_offset + (uint64_t)q->rct_clusters * q->cluster_size > file_size)
        return snprintf(err, errlen,
                        "%s: refcount table (%u clusters at %#llx) is invalid or past the end of the file",
                        b->path, q->rct_clusters, (unsigned long long)q->rct_offset),
               -EINVAL;
    if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS ||
        (q->nb_snapshots && !qcow2_offset_ok(b, q->snapshots_offset)))
        return snprintf(err, errlen, "%s: bad snapshot table", b->path), -EINVAL;
    uint64_t bf_off = rd64(h + 8);
    uint32_t bf_len = rd32(h + 16);
    if (bf_off) {
        if (bf_len >= sizeof(q->backing_file) || bf_off > q->cluster_size ||
            bf_len > q->cluster_size - bf_off)
            return snprintf(err, errlen, "%s: backing file name is invalid", b->path), -EINVAL;
        memcpy(q->backing_file, h + bf_off, bf_len);
        q->backing_file[bf_len] = 0;
    }
    return read_extensions(b, h, q->header_length, bf_off ? bf_off : q->cluster_size, err, errlen);
}

static int load_tables(struct blk *b, char *err, size_t errlen)
{
    struct qcow2 *q = Q(b);
    q->rct_entries = (uint64_t)q->rct_clusters * q->cluster_size / 8;
    q->l1 = calloc(q->l1_size ? q->l1_size : 1, 8);
    q->rct = calloc(q->rct_entries, 8);
    q->l2c.data = malloc((size_t)CACHE_ENTRIES * q->cluster_size);
    q->rbc.data = malloc((size_t)CACHE_ENTRIES * q->cluster_size);
    q->cbuf = malloc(2 * (size_t)q->cluster_size + 4096);
    q->zbuf = malloc(q->cluster_size);
    if (!q->l1 || !q->rct || !q->l2c.data || !q->rbc.data || !q->cbuf || !q->zbuf)
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    int r = file_pread(b->fd, q->l1, (size_t)q->l1_size * 8, q->l1_offset);
    if (r == 0)
        r = file_pread(b->fd, q->rct, q->rct_entries * 8, q->rct_offset);
    if (r < 0)
        return snprintf(err, errlen, "reading %s: %s", b->path, strerror(-r)), r;
    return 0;
}

static int qcow2_open(struct blk *b, int flags, char *err, size_t errlen)
{
    struct qcow2 *q = calloc(1, sizeof(*q));
    if (!q)
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    b->priv = q;
    pthread_cond_init(&q->inplace_done, NULL);
    struct stat st;
    if (fstat(b->fd, &st) < 0)
        return -errno;
    /* The header cluster, read at its own size (2 MiB at most): the cluster size first. */
    uint8_t head[24];
    int r = file_pread(b->fd, head, sizeof(head), 0);
    uint32_t bits = rd32(head + 20);
    size_t hlen = r == 0 && bits >= QCOW2_MIN_CLUSTER_BITS && bits <= QCOW2_MAX_CLUSTER_BITS ? 1u << bits
                                                                                             : 512;
    uint8_t *h = calloc(1, hlen);
    if (!h)
        return -ENOMEM;
    if (r == 0)
        r = file_pread(b->fd, h, hlen, 0);
    if (r == 0 && (uint64_t)st.st_size < 72)
        r = -EINVAL, snprintf(err, errlen, "%s: truncated qcow2 header", b->path);
    else if (r == 0)
        r = parse_header(b, h, (uint64_t)st.st_size, err, errlen);
    free(h);
    if (r < 0)
        return r;
    q->file_end = ((uint64_t)st.st_size + q->cluster_size - 1) & ~((uint64_t)q->cluster_size - 1);
    if ((r = load_tables(b, err, errlen)) < 0)
        return r;
    if ((q->incompat & QCOW2_INCOMPAT_DIRTY) && (flags & BLK_O_RDWR)) {
        /* Lazy refcounts were in use and the image was not closed cleanly: rebuild them. */
        struct blk_check_result res;
        if ((r = qcow2_check(b, BLK_REPAIR_LEAKS | BLK_REPAIR_ERRORS, &res)) < 0)
            return snprintf(err, errlen, "%s", b->errmsg), r;
        uint64_t v = htobe64(q->incompat & ~QCOW2_INCOMPAT_DIRTY);
        if (fdatasync(b->fd) < 0 || qcow2_write_header_field(b, 72, &v, 8) < 0)
            return snprintf(err, errlen, "%s", b->errmsg), -EIO;
        q->incompat &= ~QCOW2_INCOMPAT_DIRTY;
    }
    /* Auto-clear features (persistent dirty bitmaps, ...) describe data kvmbox does not keep
     * up to date: the spec lets a writer that does not know them write only after clearing
     * them, which tells QEMU their data is stale (else a bitmap would miss our writes). */
    if ((flags & BLK_O_RDWR) && q->version >= 3 && q->autoclear) {
        uint64_t zero = 0;
        if ((r = qcow2_write_header_field(b, 88, &zero, 8)) < 0 || fdatasync(b->fd) < 0)
            return snprintf(err, errlen, "%s", r < 0 ? b->errmsg : strerror(errno)), r < 0 ? r : -EIO;
        q->autoclear = 0;
    }
    /* Writes are checked against every metadata cluster (the backing file is opened by
     * block/open.c, through qcow2_backing_name). */
    if ((flags & BLK_O_RDWR) && (r = qcow2_meta_build(b)) < 0)
        return snprintf(err, errlen, "out of memory"), r;
    return 0;
}

static const char *qcow2_backing_name(struct blk *b, const char **fmt)
{
    *fmt = Q(b)->backing_format;
    return Q(b)->backing_file;
}

static int qcow2_flush(struct blk *b)
{
    /* Metadata is written through as it changes; one fdatasync covers data and metadata. */
    return fdatasync(b->fd) < 0 ? blk_set_err(b, -errno, "flush %s: %s", b->path, strerror(errno)) : 0;
}

static void qcow2_close(struct blk *b)
{
    struct qcow2 *q = Q(b);
    if (!q)
        return;
    if (b->flags & BLK_O_RDWR)
        fdatasync(b->fd);
    free(q->l1), free(q->rct), free(q->l2c.data), free(q->rbc.data), free(q->cbuf), free(q->zbuf);
    qcow2_meta_destroy(q);
    pthread_cond_destroy(&q->inplace_done);
    free(q);
    b->priv = NULL;
}

static int qcow2_info(struct blk *b, struct blk_info *info)
{
    struct qcow2 *q = Q(b);
    info->cluster_size = q->cluster_size;
    info->qcow2_version = (int)q->version;
    info->refcount_bits = q->refcount_bits;
    info->dirty = q->incompat & QCOW2_INCOMPAT_DIRTY;
    info->corrupt = (q->incompat & QCOW2_INCOMPAT_CORRUPT) || q->corrupt;
    info->lazy_refcounts = q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->compression_deflate = true;
    info->nb_snapshots = (int)q->nb_snapshots;
    snprintf(info->backing_file, sizeof(info->backing_file), "%s", q->backing_file);
    snprintf(info->backing_format, sizeof(info->backing_format), "%s", q->backing_format);
    if (b->backing)
        snprintf(info->backing_path, sizeof(info->backing_path), "%s", b->backing->path);
    return 0;
}

/* ---- creation ---- */

static void set_refcount_in_block(uint8_t *blk, uint64_t idx, uint32_t bits, uint64_t v)
{
    uint64_t bit = idx * bits;
    if (bits >= 8) {
        for (uint32_t i = 0; i < bits / 8; i++)
            blk[bit / 8 + i] = (uint8_t)(v >> (8 * (bits / 8 - 1 - i)));
    } else {
        unsigned shift = (unsigned)(bit % 8);
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << shift) & mask));
    }
}

static int qcow2_create(int fd, const char *path, uint64_t size, const struct blk_create_opts *o, char *err,
                        size_t errlen)
{
    uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
    int version = o->qcow2_version ? o->qcow2_version : 3;
    uint32_t rbits = o->refcount_bits ? o->refcount_bits : 16;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        return snprintf(err, errlen, "cluster size must be a power of two from 512 to 2M"), -EINVAL;
    if (rbits > 64 || (rbits & (rbits - 1)) || (version == 2 && rbits != 16))
        return snprintf(err, errlen, "refcount bits must be a power of two up to 64 (16 for compat=0.10)"),
               -EINVAL;
    if (version == 2 && o->lazy_refcounts)
        return snprintf(err, errlen, "lazy refcounts need compat=1.1"), -EINVAL;
    size = size > UINT64_MAX - 511 ? size
                                   : (size + 511) & ~511ULL; /* whole sectors, as qemu-img makes them */
    int r = qcow2_size_ok(size, (unsigned)__builtin_ctz(cs), err, errlen); /* what open accepts */
    if (r < 0)
        return r;
    uint64_t l2e = cs / 8, rbe = (uint64_t)cs * 8 / rbits;
    uint64_t l1_size = (size + cs * l2e - 1) / (cs * l2e);
    uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
    if (!l1_clusters)
        l1_clusters = 1;
    /* A refcount table big enough for the whole disk plus metadata, within reason. */
    uint64_t want = size / cs + size / cs / 16 + 64;
    uint64_t rct_clusters = ((want + rbe - 1) / rbe * 8 + cs - 1) / cs;
    if (rct_clusters * cs > QCOW2_MAX_RCT_BYTES)
        rct_clusters = QCOW2_MAX_RCT_BYTES / cs;
    if (!rct_clusters)
        rct_clusters = 1;
    uint64_t rb = 1, total;
    for (;;) { /* refcount blocks that cover the initial clusters, themselves included */
        total = 1 + rct_clusters + rb + l1_clusters;
        if ((total + rbe - 1) / rbe <= rb)
            break;
        rb = (total + rbe - 1) / rbe;
    }
    uint8_t *buf = calloc(total, cs);
    if (!buf)
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    uint8_t *h = buf;
    wr32(h, QCOW2_MAGIC), wr32(h + 4, (uint32_t)version);
    wr32(h + 20, (uint32_t)__builtin_ctz(cs)), wr64(h + 24, size);
    wr32(h + 36, (uint32_t)l1_size), wr64(h + 40, (1 + rct_clusters + rb) * cs);
    wr64(h + 48, cs), wr32(h + 56, (uint32_t)rct_clusters);
    uint32_t hlen = version >= 3 ? 112 : 72;
    if (version >= 3) {
        wr64(h + 80, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        wr32(h + 96, (uint32_t)__builtin_ctz(rbits)), wr32(h + 100, hlen);
    }
    uint32_t off = hlen;
    if (o->backing_format) {
        size_t n = strlen(o->backing_format);
        wr32(h + off, QCOW2_EXT_BACKING_FORMAT), wr32(h + off + 4, (uint32_t)n);
        memcpy(h + off + 8, o->backing_format, n);
        off += 8 + (uint32_t)((n + 7) & ~7u);
    }
    off += 8; /* end-of-extensions marker (zeroes) */
    if (o->backing_file) {
        size_t n = strlen(o->backing_file);
        if (n >= 1024 || off + n > cs) {
            free(buf);
            return snprintf(err, errlen, "backing file name is too long"), -EINVAL;
        }
        wr64(h + 8, off), wr32(h + 16, (uint32_t)n);
        memcpy(h + off, o->backing_file, n);
    }
    uint8_t *rct = buf + cs;
    for (uint64_t i = 0; i < rb; i++)
        wr64(rct + 8 * i, (1 + rct_clusters + i) * cs);
    for (uint64_t c = 0; c < total; c++)
        set_refcount_in_block(buf + (1 + rct_clusters + c / rbe) * cs, c % rbe, rbits, 1);
    r = ftruncate(fd, 0) < 0 ? -errno : file_pwrite(fd, buf, total * cs, 0);
    free(buf);
    if (r < 0)
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-r));
    return r;
}

/* Rewrites the backing file name and format, keeping every other header extension: the
 * extension area is rebuilt (backing format first, then the others as they were, then the
 * end marker) and the name follows it, all inside the header cluster. */
static int qcow2_set_backing(struct blk *b, const char *file, const char *fmt)
{
    struct qcow2 *q = Q(b);
    uint32_t cs = q->cluster_size, start = q->header_length;
    uint8_t *h = calloc(2, cs);
    if (!h)
        return -ENOMEM;
    uint8_t *out = h + cs;
    int r = file_pread(b->fd, h, cs, 0);
    uint64_t old_name = rd64(h + 8);
    uint64_t end = old_name ? old_name : cs;
    size_t n = file ? strlen(file) : 0, fl = fmt && n ? strlen(fmt) : 0;
    uint32_t o = start;
    if (fl) {
        wr32(out + o, QCOW2_EXT_BACKING_FORMAT), wr32(out + o + 4, (uint32_t)fl);
        memcpy(out + o + 8, fmt, fl);
        o += 8 + (uint32_t)((fl + 7) & ~7u);
    }
    for (uint64_t off = start; r == 0 && off + 8 <= end;) {
        uint32_t type = rd32(h + off), len = rd32(h + off + 4);
        uint32_t step = 8 + ((len + 7) & ~7u);
        if (type == QCOW2_EXT_END || off + step > end)
            break;
        if (type != QCOW2_EXT_BACKING_FORMAT) {
            if (o + step + 8 > cs) {
                r = -ENOSPC;
                break;
            }
            memcpy(out + o, h + off, step);
            o += step;
        }
        off += step;
    }
    o += 8; /* end marker */
    if (r == 0 && (n >= 1024 || o + n > cs))
        r = -ENOSPC;
    if (r == 0) {
        memcpy(out, h, start);
        memcpy(out + o, file ? file : "", n);
        wr64(out + 8, n ? o : 0), wr32(out + 16, (uint32_t)n);
        r = file_pwrite(b->fd, out, cs, 0);
        if (r == 0 && fdatasync(b->fd) < 0)
            r = -errno;
    }
    free(h);
    if (r < 0)
        return blk_set_err(b, r, "cannot rewrite the header of %s: %s", b->path, strerror(-r));
    snprintf(q->backing_file, sizeof(q->backing_file), "%s", file ? file : "");
    snprintf(q->backing_format, sizeof(q->backing_format), "%s", fl ? fmt : "");
    return 0;
}

static int qcow2_truncate(struct blk *b, uint64_t size, bool shrink)
{
    struct qcow2 *q = Q(b);
    char why[BLK_ERRMSG_MAX - 64];
    size = size > UINT64_MAX - 511 ? size : (size + 511) & ~511ULL;
    if (qcow2_size_ok(size, q->cluster_bits, why, sizeof(why)) < 0)
        return blk_set_err(b, -EFBIG, "%s: %s", b->path, why);
    if (size < b->size) {
        /* Shrink: the tail of the last kept cluster reads as zeroes if the image grows
         * again, and every cluster past it is released. The L1 table keeps its size. */
        uint64_t cs = q->cluster_size, keep = (size + cs - 1) & ~(cs - 1);
        int r = 0;
        if (keep > size)
            r = qcow2_write_zeroes(b, size, keep - size, 0);
        if (r == 0 && b->size > keep)
            r = qcow2_drop_clusters(b, keep, ((b->size + cs - 1) & ~(cs - 1)) - keep);
        if (r < 0)
            return r;
        uint64_t v = htobe64(size);
        if ((r = qcow2_write_header_field(b, 24, &v, 8)) == 0 && fdatasync(b->fd) < 0)
            r = -errno;
        if (r == 0)
            b->size = size;
        return r;
    }
    uint64_t per_l1 = (uint64_t)q->cluster_size * q->l2_entries;
    uint64_t need = (size + per_l1 - 1) / per_l1;
    if (need > q->l1_size) {
        /* A new, larger L1 table at the end of the file; the old one is freed after. */
        uint64_t bytes = need * 8, clusters = (bytes + q->cluster_size - 1) / q->cluster_size, off;
        if (bytes > QCOW2_MAX_L1_BYTES)
            return blk_set_err(b, -EFBIG, "%s cannot grow that large", b->path);
        int r = qcow2_alloc_clusters(b, clusters, &off);
        if (r == 0)
            r = qcow2_meta_add(q, off, clusters * q->cluster_size, QCOW2_META_FIXED);
        if (r < 0)
            return r;
        uint64_t *l1 = calloc(clusters * q->cluster_size / 8, 8);
        if (!l1)
            return -ENOMEM;
        memcpy(l1, q->l1, (size_t)q->l1_size * 8);
        r = file_pwrite(b->fd, l1, clusters * q->cluster_size, off);
        if (r == 0 && fdatasync(b->fd) < 0)
            r = -errno;
        uint8_t hdr[12];
        wr32(hdr, (uint32_t)need), wr64(hdr + 4, off);
        if (r == 0)
            r = qcow2_write_header_field(b, 36, hdr, 12);
        if (r < 0) {
            free(l1);
            return r;
        }
        uint64_t old = q->l1_offset,
                 old_clusters = ((uint64_t)q->l1_size * 8 + q->cluster_size - 1) / q->cluster_size;
        free(q->l1);
        q->l1 = l1, q->l1_offset = off, q->l1_size = (uint32_t)need;
        for (uint64_t i = 0; i < old_clusters; i++)
            qcow2_update_refcount(b, old + i * q->cluster_size, -1);
    }
    uint64_t v = htobe64(size);
    int r = qcow2_write_header_field(b, 24, &v, 8);
    if (r == 0)
        b->size = size;
    return r;
}

static int qcow2_check_op(struct blk *b, unsigned repair, struct blk_check_result *res)
{
    return qcow2_check(b, repair, res);
}

const struct blk_ops blk_qcow2_ops = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .preadv = qcow2_preadv,
    .pwritev = qcow2_pwritev,
    .flush = qcow2_flush,
    .discard = qcow2_discard,
    .write_zeroes = qcow2_write_zeroes,
    .write_compressed = qcow2_write_compressed,
    .block_status = qcow2_block_status,
    .info = qcow2_info,
    .create = qcow2_create,
    .check = qcow2_check_op,
    .truncate = qcow2_truncate,
    .set_backing = qcow2_set_backing,
    .map = qcow2_map,
    .map_done = qcow2_map_done,
    .backing_name = qcow2_backing_name,
};
