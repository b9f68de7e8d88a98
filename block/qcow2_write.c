/* qcow2's write side. Writes go in place to clusters this image owns alone (COPIED);
 * anything else gets a new cluster (copy-on-write, filled from the old contents for partial
 * writes). Ordering: a new cluster's refcount, then its data, then (after one fdatasync per
 * request) the L2 entries; old clusters are released last. Also write-zeroes, discard,
 * compressed writes, and dropping clusters for shrink. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "block/qcow2.h"

struct pending {
    uint64_t l2_off;
    uint32_t idx;
    uint64_t entry, old;
};

struct batch {
    struct pending *p;
    size_t n, cap;
};

static int batch_add(struct batch *bt, uint64_t l2_off, uint32_t idx, uint64_t entry, uint64_t old)
{
    if (bt->n == bt->cap) {
        size_t cap = bt->cap ? 2 * bt->cap : 16;
        struct pending *p = realloc(bt->p, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        bt->p = p, bt->cap = cap;
    }
    bt->p[bt->n++] = (struct pending){ l2_off, idx, entry, old };
    return 0;
}

/* Adds DELTA references to whatever entry E points at (all clusters a compressed cluster
 * spans). */
static int adjust(struct blk *b, uint64_t e, int64_t delta)
{
    struct qcow2 *q = Q(b);
    if (e & QCOW_OFLAG_COMPRESSED) {
        unsigned x = 62 - (q->cluster_bits - 8);
        uint64_t host = e & ((1ULL << x) - 1), sectors = ((e >> x) & ((1ULL << (62 - x)) - 1)) + 1;
        uint64_t first = host & ~((uint64_t)q->cluster_size - 1),
                 last = (host + sectors * 512 - (host & 511) - 1) & ~((uint64_t)q->cluster_size - 1);
        for (uint64_t c = first; c <= last; c += q->cluster_size) {
            int r = qcow2_update_refcount(b, c, delta);
            if (r < 0)
                return r;
        }
        return 0;
    }
    uint64_t host = e & L2E_OFFSET_MASK;
    return host ? qcow2_update_refcount(b, host, delta) : 0;
}

static int release(struct blk *b, uint64_t e)
{
    qcow2_wait_inplace(b); /* an unlocked in-place write may still be writing this cluster */
    return adjust(b, e, -1);
}

/* L2 entries reach the disk only after the clusters they point at (refcounts and data). */
static int batch_commit(struct blk *b, struct batch *bt)
{
    struct qcow2 *q = Q(b);
    if (!bt->n)
        return 0;
    if (ordered_sync(b) < 0)
        return blk_set_err(b, -errno, "flush %s: %s", b->path, strerror(errno));
    for (size_t i = 0; i < bt->n;) {
        uint8_t *t;
        int r = qcow2_meta_check_write(b, bt->p[i].l2_off, q->cluster_size, QCOW2_META_L2);
        if (r < 0 || (r = qcow2_cache_get(b, &q->l2c, bt->p[i].l2_off, &t)) < 0)
            return r;
        /* Consecutive entries of one table go out in one write. */
        size_t j = i;
        do {
            ((uint64_t *)t)[bt->p[j].idx] = htobe64(bt->p[j].entry);
            j++;
        } while (j < bt->n && bt->p[j].l2_off == bt->p[i].l2_off && bt->p[j].idx == bt->p[j - 1].idx + 1);
        uint64_t first = bt->p[i].idx;
        if ((r = file_pwrite(b->fd, t + 8 * first, 8 * (j - i), bt->p[i].l2_off + 8 * first)) < 0)
            return blk_set_err(b, r, "writing L2 entries of %s", b->path);
        i = j;
    }
    for (size_t i = 0; i < bt->n; i++) {
        int r = release(b, bt->p[i].old);
        if (r < 0)
            return r;
    }
    bt->n = 0;
    return 0;
}

/* The L2 table that guest offset OFF's entry is written to: this image's own (COPIED) one,
 * or a new table (empty, or a copy of a table shared with a snapshot). */
static int l2_for_write(struct blk *b, uint64_t off, uint64_t *l2_off, uint32_t *idx)
{
    struct qcow2 *q = Q(b);
    uint64_t l1_idx = off >> (q->cluster_bits + q->cluster_bits - 3);
    int r = qcow2_l2_slot(b, off, l2_off, idx);
    if (r < 0)
        return r;
    uint64_t l1e = be64(q->l1[l1_idx]);
    if (*l2_off && (l1e & QCOW_OFLAG_COPIED))
        return 0;
    uint64_t old = *l2_off, fresh;
    uint64_t *table = calloc(1, q->cluster_size);
    if (!table)
        return -ENOMEM;
    if ((r = qcow2_alloc_clusters(b, 1, &fresh)) < 0 ||
        (r = qcow2_meta_add(q, fresh, q->cluster_size, QCOW2_META_L2)) < 0)
        goto out;
    if (old) {
        if ((r = file_pread(b->fd, table, q->cluster_size, old)) < 0)
            goto out;
        /* Data clusters' refcounts already count every L1 table that reaches them (qcow2's
         * rule: a snapshot adds one to each cluster its L1 reaches), so copying the table
         * changes none of them; entries just lose COPIED, as their clusters are shared. */
        for (uint32_t i = 0; i < q->l2_entries; i++)
            table[i] = htobe64(be64(table[i]) & ~QCOW_OFLAG_COPIED);
    }
    if (r == 0 && (r = file_pwrite(b->fd, table, q->cluster_size, fresh)) == 0 && ordered_sync(b) < 0)
        r = -errno;
    if (r == 0) {
        uint64_t be = htobe64(fresh | QCOW_OFLAG_COPIED);
        r = file_pwrite(b->fd, &be, 8, q->l1_offset + 8 * l1_idx);
        if (r == 0)
            q->l1[l1_idx] = be;
    }
    qcow2_cache_drop(&q->l2c, fresh);
    if (r == 0 && old)
        r = qcow2_update_refcount(b, old, -1);
    *l2_off = fresh;
out:
    free(table);
    return r < 0 ? blk_set_err(b, r, "allocating an L2 table in %s", b->path) : 0;
}

int qcow2_map(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write,
              int *fd, uint64_t *host)
{
    struct qcow2 *q = Q(b);
    int mapped = 0;
    pthread_mutex_lock(&b->lock);
    if (q->corrupt)
        goto out; /* the driver's own path reports it */
    uint64_t in = off & (q->cluster_size - 1), base = 0, run = 0;
    while (run < len) {
        uint64_t e;
        if (qcow2_get_l2_entry(b, off + run, &e) < 0)
            goto out;
        uint64_t h = e & L2E_OFFSET_MASK;
        if (!h || (e & QCOW_OFLAG_COMPRESSED) || qcow2_entry_is_zero(q, e) ||
            (write && !(e & QCOW_OFLAG_COPIED)))
            goto out;
        if (run == 0)
            base = h + in;
        else if (h != base - in + ((in + run) & ~((uint64_t)q->cluster_size - 1)))
            goto out; /* not contiguous on the host */
        run += q->cluster_size - ((in + run) & (q->cluster_size - 1));
    }
    uint64_t where;
    if (write && qcow2_meta_find(q, base, len, &where))
        goto out; /* metadata: the driver's own path refuses it and marks the image corrupt */
    if (write)
        q->inplace_inflight++; /* freeing or sharing these clusters now waits for map_done */
    *host = base;
    *fd = blk_data_fd(b, iov, iovcnt, base, len);
    mapped = 1;
out:
    pthread_mutex_unlock(&b->lock);
    return mapped;
}

void qcow2_map_done(struct blk *b, bool write)
{
    if (!write)
        return;
    struct qcow2 *q = Q(b);
    pthread_mutex_lock(&b->lock);
    if (--q->inplace_inflight == 0)
        pthread_cond_broadcast(&q->inplace_done);
    pthread_mutex_unlock(&b->lock);
}

/* Writes one cluster's worth (or part) of guest data at OFF. */
static int write_piece(struct blk *b, const struct iovec *iov, int iovcnt, size_t skip, uint64_t off,
                       uint64_t n, uint64_t *total, struct batch *bt, uint8_t *wbuf)
{
    struct qcow2 *q = Q(b);
    uint64_t in = off & (q->cluster_size - 1), l2_off, e;
    uint32_t idx;
    int r = l2_for_write(b, off, &l2_off, &idx);
    if (r < 0 || (r = qcow2_get_l2_entry(b, off, &e)) < 0)
        return r;
    uint64_t host = e & L2E_OFFSET_MASK;
    if (host && (e & QCOW_OFLAG_COPIED) && !(e & QCOW_OFLAG_COMPRESSED) && !qcow2_entry_is_zero(q, e)) {
        /* Extend to following clusters this image owns that follow on the host. */
        while (n < *total) {
            uint64_t e2, m = *total - n < q->cluster_size ? *total - n : q->cluster_size;
            if (qcow2_get_l2_entry(b, off + n, &e2) < 0 || !(e2 & QCOW_OFLAG_COPIED) ||
                (e2 & QCOW_OFLAG_COMPRESSED) || qcow2_entry_is_zero(q, e2) ||
                (e2 & L2E_OFFSET_MASK) != host + in + n)
                break;
            n += m;
        }
        *total = n;
        /* Every write is checked against all metadata: one search for the whole run. */
        if ((r = qcow2_meta_check_write(b, host + in, n, 0)) < 0)
            return r;
        /* The data goes out without the lock, so that requests in flight overlap: this
         * request's pending L2 entries are committed first (others must see them), and
         * whoever frees or shares a cluster waits for unlocked writes to finish. */
        if ((r = batch_commit(b, bt)) < 0)
            return r;
        q->inplace_inflight++;
        pthread_mutex_unlock(&b->lock);
        struct iovec seg[QCOW2_MAX_SEGS];
        int cnt = qcow2_iov_slice(iov, iovcnt, skip, n, seg);
        ssize_t w = cnt >= 0 ? pwritev(blk_data_fd(b, seg, cnt, host + in, n), seg, cnt, (off_t)(host + in))
                             : -1;
        if (w != (ssize_t)n) {
            uint8_t *tmp = malloc(n);
            r = tmp ? 0 : -ENOMEM;
            if (tmp) {
                iov_to_buf(iov, iovcnt, skip, tmp, n);
                r = file_pwrite(b->fd, tmp, n, host + in);
                free(tmp);
            }
        }
        pthread_mutex_lock(&b->lock);
        if (--q->inplace_inflight == 0)
            pthread_cond_broadcast(&q->inplace_done);
        return r < 0 ? blk_set_err(b, r, "writing %s: %s", b->path, strerror(-r)) : 0;
    }
    *total = n;
    /* Copy-on-write into a new cluster: the old contents around a partial write first. */
    uint64_t start = off - in, fresh;
    if (n < q->cluster_size) {
        struct iovec whole = { wbuf, q->cluster_size };
        uint64_t len = b->size - start < q->cluster_size ? b->size - start : q->cluster_size;
        if ((r = qcow2_read_locked(b, &whole, 1, start, len, false)) < 0)
            return r;
        memset(wbuf + len, 0, q->cluster_size - len);
    }
    iov_to_buf(iov, iovcnt, skip, wbuf + in, n);
    if ((r = qcow2_alloc_clusters(b, 1, &fresh)) < 0 ||
        (r = qcow2_meta_check_write(b, fresh, q->cluster_size, 0)) < 0)
        return r;
    struct iovec wv = { wbuf, q->cluster_size };
    int wfd = blk_data_fd(b, &wv, 1, fresh, q->cluster_size);
    if ((r = file_pwrite(wfd, wbuf, q->cluster_size, fresh)) < 0)
        return blk_set_err(b, r, "writing %s: %s", b->path, strerror(-r));
    return batch_add(bt, l2_off, idx, fresh | QCOW_OFLAG_COPIED, e);
}

/* True when guest cluster OFF would get a new host cluster on a full overwrite. */
static bool needs_new_cluster(struct blk *b, uint64_t off)
{
    struct qcow2 *q = Q(b);
    uint64_t e;
    if (qcow2_get_l2_entry(b, off, &e) < 0)
        return false;
    return !(e & L2E_OFFSET_MASK) || !(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFLAG_COMPRESSED) ||
           qcow2_entry_is_zero(q, e);
}

/* Whole clusters that all need new host clusters are allocated together and written with
 * one pwritev: N full clusters from guest offset OFF (cluster-aligned). Returns how many
 * bytes it wrote (0: not applicable here). */
static int64_t write_run(struct blk *b, const struct iovec *iov, int iovcnt, size_t skip, uint64_t off,
                         uint64_t len, struct batch *bt)
{
    struct qcow2 *q = Q(b);
    uint64_t cs = q->cluster_size, n = 0, l2_off, first_l2 = 0;
    uint32_t idx;
    while ((n + 1) * cs <= len && n < 1024) {
        uint64_t o = off + n * cs;
        if (l2_for_write(b, o, &l2_off, &idx) < 0)
            return -EIO;
        if (n == 0)
            first_l2 = l2_off;
        if (l2_off != first_l2 || !needs_new_cluster(b, o))
            break;
        n++;
    }
    if (n < 2)
        return 0;
    uint64_t host;
    int r = qcow2_alloc_clusters(b, n, &host);
    if (r < 0 || (r = qcow2_meta_check_write(b, host, n * cs, 0)) < 0)
        return r;
    struct iovec seg[QCOW2_MAX_SEGS];
    int cnt = qcow2_iov_slice(iov, iovcnt, skip, n * cs, seg);
    ssize_t w = cnt >= 0 ? pwritev(blk_data_fd(b, seg, cnt, host, n * cs), seg, cnt, (off_t)host) : -1;
    if (w != (ssize_t)(n * cs)) {
        uint8_t *tmp = aligned_alloc(4096, n * cs);
        if (!tmp)
            return -ENOMEM;
        iov_to_buf(iov, iovcnt, skip, tmp, n * cs);
        struct iovec v = { tmp, n * cs };
        r = file_pwrite(blk_data_fd(b, &v, 1, host, n * cs), tmp, n * cs, host);
        free(tmp);
        if (r < 0)
            return blk_set_err(b, r, "writing %s: %s", b->path, strerror(-r));
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e;
        if ((r = qcow2_get_l2_entry(b, off + i * cs, &e)) < 0 ||
            (r = qcow2_l2_slot(b, off + i * cs, &l2_off, &idx)) < 0 ||
            (r = batch_add(bt, l2_off, idx, (host + i * cs) | QCOW_OFLAG_COPIED, e)) < 0)
            return r;
    }
    return (int64_t)(n * cs);
}

int qcow2_pwritev(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
    struct qcow2 *q = Q(b);
    struct batch bt = { 0 };
    uint8_t *wbuf = aligned_alloc(4096, (q->cluster_size + 4095) & ~4095u);
    if (!wbuf)
        return -ENOMEM;
    pthread_mutex_lock(&b->lock);
    int r = q->corrupt ? blk_set_err(b, -EIO, "%s is corrupt", b->path) : 0;
    size_t skip = 0;
    while (r == 0 && len) {
        uint64_t in = off & (q->cluster_size - 1),
                 n = q->cluster_size - in < len ? q->cluster_size - in : len;
        int64_t run = in == 0 ? write_run(b, iov, iovcnt, skip, off, len, &bt) : 0;
        if (run < 0) {
            r = (int)run;
            break;
        }
        if (run > 0) {
            n = (uint64_t)run;
        } else {
            uint64_t total = len; /* write_piece may take more than one cluster in place */
            r = write_piece(b, iov, iovcnt, skip, off, n, &total, &bt, wbuf);
            if (total > n)
                n = total;
        }
        /* Commit per L2 table's worth so a long request does not hold everything back. */
        if (r == 0 && bt.n >= 256)
            r = batch_commit(b, &bt);
        off += n, len -= n, skip += n;
    }
    if (r == 0)
        r = batch_commit(b, &bt);
    pthread_mutex_unlock(&b->lock);
    free(bt.p);
    free(wbuf);
    return r;
}

/* Sets the entries of the whole clusters in [off, off+len) to ENTRY (0 or the zero flag),
 * releasing what they pointed at; partial clusters are left to the caller. */
static int set_whole_clusters(struct blk *b, uint64_t off, uint64_t len, uint64_t entry)
{
    struct qcow2 *q = Q(b);
    struct batch bt = { 0 };
    int r = 0;
    for (uint64_t c = off; r == 0 && c + q->cluster_size <= off + len; c += q->cluster_size) {
        uint64_t l2_off, e;
        uint32_t idx;
        if ((r = qcow2_get_l2_entry(b, c, &e)) < 0)
            break;
        if (!e && !entry)
            continue; /* already unallocated */
        if ((r = l2_for_write(b, c, &l2_off, &idx)) == 0 && (r = qcow2_get_l2_entry(b, c, &e)) == 0)
            r = batch_add(&bt, l2_off, idx, entry, e);
        if (r == 0 && bt.n >= 256)
            r = batch_commit(b, &bt);
    }
    if (r == 0)
        r = batch_commit(b, &bt);
    free(bt.p);
    return r;
}

int qcow2_drop_clusters(struct blk *b, uint64_t off, uint64_t len)
{
    pthread_mutex_lock(&b->lock);
    int r = set_whole_clusters(b, off, len, 0);
    pthread_mutex_unlock(&b->lock);
    return r;
}

static int write_zero_bytes(struct blk *b, uint64_t off, uint64_t len)
{
    struct qcow2 *q = Q(b);
    uint8_t *z = calloc(1, q->cluster_size);
    if (!z)
        return -ENOMEM;
    int r = 0;
    while (r == 0 && len) {
        uint64_t n = len < q->cluster_size ? len : q->cluster_size;
        struct iovec v = { z, n };
        r = qcow2_pwritev(b, &v, 1, off, n);
        off += n, len -= n;
    }
    free(z);
    return r;
}

int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
    struct qcow2 *q = Q(b);
    if (q->version < 3)
        return write_zero_bytes(b, off, len); /* v2 has no zero flag */
    uint64_t cs = q->cluster_size, head = (cs - (off & (cs - 1))) & (cs - 1);
    if (head > len)
        head = len;
    uint64_t mid = (len - head) & ~(cs - 1), tail = len - head - mid;
    int r = head ? write_zero_bytes(b, off, head) : 0;
    if (r == 0 && mid) {
        pthread_mutex_lock(&b->lock);
        r = set_whole_clusters(b, off + head, mid, QCOW_OFLAG_ZERO);
        pthread_mutex_unlock(&b->lock);
    }
    if (r == 0 && tail)
        r = write_zero_bytes(b, off + head + mid, tail);
    return r;
}

int qcow2_discard(struct blk *b, uint64_t off, uint64_t len)
{
    struct qcow2 *q = Q(b);
    uint64_t cs = q->cluster_size, start = (off + cs - 1) & ~(cs - 1), end = (off + len) & ~(cs - 1);
    if (end <= start)
        return 0;
    /* With a backing file an unallocated cluster would show the backing data again; v3 can
     * say "zero" instead, v2 keeps the data. */
    if (b->backing && q->version < 3)
        return 0;
    pthread_mutex_lock(&b->lock);
    int r = set_whole_clusters(b, start, end - start, b->backing ? QCOW_OFLAG_ZERO : 0);
    pthread_mutex_unlock(&b->lock);
    return r;
}

/* Compressed clusters are packed back to back into host clusters, each host cluster's
 * refcount counting the compressed clusters that use it. */
int qcow2_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    struct qcow2 *q = Q(b);
    uint64_t cs = q->cluster_size;
    if ((off & (cs - 1)) || (len != cs && off + len != b->size))
        return blk_set_err(b, -EINVAL, "compressed writes are whole clusters");
    uint8_t *src = (uint8_t *)buf;
    uint8_t *full = NULL;
    if (len < cs) { /* the last, partial cluster of the disk */
        full = calloc(1, cs);
        if (!full)
            return -ENOMEM;
        memcpy(full, buf, len);
        src = full;
    }
    z_stream z = { 0 };
    uLong bound = cs + cs / 2 + 64;
    uint8_t *out = malloc(bound);
    int r = out && deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) == Z_OK
                ? 0
                : -ENOMEM;
    size_t clen = 0;
    if (r == 0) {
        z.next_in = src, z.avail_in = (uInt)cs, z.next_out = out, z.avail_out = (uInt)bound;
        int zr = deflate(&z, Z_FINISH);
        clen = bound - z.avail_out;
        deflateEnd(&z);
        if (zr != Z_STREAM_END)
            r = -EIO;
    }
    if (r == 0 && clen >= cs - 512) { /* does not compress: store it plainly */
        struct iovec v = { src, cs };
        free(out), free(full);
        return b->size - off < cs ? blk_pwrite(b, buf, len, off) : qcow2_pwritev(b, &v, 1, off, cs);
    }
    pthread_mutex_lock(&b->lock);
    uint64_t host = 0, l2_off, e;
    uint32_t idx;
    struct batch bt = { 0 };
    if (r == 0 && (r = l2_for_write(b, off, &l2_off, &idx)) == 0 &&
        (r = qcow2_get_l2_entry(b, off, &e)) == 0) {
        if (q->comp_next && q->comp_end - q->comp_next >= clen && q->comp_end == q->file_end) {
            host = q->comp_next; /* shares the current host cluster: one more reference */
            r = qcow2_update_refcount(b, host & ~(cs - 1), 1);
        } else {
            uint64_t fresh;
            r = qcow2_alloc_clusters(b, (clen + cs - 1) / cs, &fresh);
            host = fresh;
            q->comp_end = fresh + ((clen + cs - 1) / cs) * cs;
        }
        q->comp_next = (host + clen + 511) & ~511ULL; /* the next one starts on a sector */
        if (q->comp_next >= q->comp_end)
            q->comp_next = 0;
    }
    if (r == 0 && (r = qcow2_meta_check_write(b, host, clen, 0)) == 0 &&
        (r = file_pwrite(b->fd, out, clen, host)) == 0) {
        unsigned x = 62 - (q->cluster_bits - 8);
        uint64_t sectors = ((host + clen - 1) >> 9) - (host >> 9);
        r = batch_add(&bt, l2_off, idx, QCOW_OFLAG_COMPRESSED | (sectors << x) | host, e);
    }
    if (r == 0)
        r = batch_commit(b, &bt);
    pthread_mutex_unlock(&b->lock);
    free(bt.p), free(out), free(full);
    return r;
}
