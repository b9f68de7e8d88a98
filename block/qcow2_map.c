/* qcow2 cluster mapping and the read side: L1/L2 lookups, reads (coalescing runs of
 * contiguous host clusters into one preadv), compressed clusters, block status. The write
 * side is in qcow2_write.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "block/qcow2.h"

bool qcow2_entry_is_zero(struct qcow2 *q, uint64_t e)
{
    return q->version >= 3 && !(e & QCOW_OFLAG_COMPRESSED) && (e & QCOW_OFLAG_ZERO);
}

/* Where guest offset OFF's L2 entry lives: the table's offset and the index. 0 if no table. */
int qcow2_l2_slot(struct blk *b, uint64_t off, uint64_t *l2_off, uint32_t *idx)
{
    struct qcow2 *q = Q(b);
    uint64_t l1_idx = off >> (q->cluster_bits + q->cluster_bits - 3);
    *idx = (uint32_t)((off >> q->cluster_bits) & (q->l2_entries - 1));
    *l2_off = l1_idx < q->l1_size ? be64(q->l1[l1_idx]) & L1E_OFFSET_MASK : 0;
    if (*l2_off && (*l2_off & (q->cluster_size - 1) || *l2_off >= q->file_end))
        return qcow2_mark_corrupt(b, "L2 table offset %#llx is invalid", (unsigned long long)*l2_off);
    return 0;
}

int qcow2_get_l2_entry(struct blk *b, uint64_t off, uint64_t *entry)
{
    struct qcow2 *q = Q(b);
    uint64_t l2_off;
    uint32_t idx;
    uint8_t *t;
    int r = qcow2_l2_slot(b, off, &l2_off, &idx);
    *entry = 0;
    if (r < 0 || !l2_off)
        return r;
    if ((r = qcow2_cache_get(b, &q->l2c, l2_off, &t)) < 0)
        return r;
    *entry = be64(((uint64_t *)t)[idx]);
    uint64_t host = *entry & L2E_OFFSET_MASK;
    if (!(*entry & QCOW_OFLAG_COMPRESSED) && host && (host & (q->cluster_size - 1) || host >= q->file_end))
        return qcow2_mark_corrupt(b, "data cluster offset %#llx is invalid", (unsigned long long)host);
    return 0;
}

static int decompress_cluster(struct blk *b, uint64_t e, uint8_t *out)
{
    struct qcow2 *q = Q(b);
    unsigned x = 62 - (q->cluster_bits - 8);
    uint64_t host = e & ((1ULL << x) - 1), sectors = ((e >> x) & ((1ULL << (62 - x)) - 1)) + 1;
    uint64_t len = sectors * 512 - (host & 511);
    if (len > 2 * (uint64_t)q->cluster_size || host + len > q->file_end + 512)
        return qcow2_mark_corrupt(b, "compressed cluster at %#llx is invalid", (unsigned long long)host);
    int r = file_pread(b->fd, q->cbuf, len, host);
    if (r < 0)
        return blk_set_err(b, r, "reading %s: %s", b->path, strerror(-r));
    z_stream z = { .next_in = q->cbuf, .avail_in = (uInt)len, .next_out = out, .avail_out = q->cluster_size };
    if (inflateInit2(&z, -12) != Z_OK)
        return blk_set_err(b, -ENOMEM, "zlib initialisation failed");
    int zr = inflate(&z, Z_FINISH);
    uint64_t got = q->cluster_size - z.avail_out;
    inflateEnd(&z);
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || got != q->cluster_size)
        return qcow2_mark_corrupt(b, "compressed cluster at %#llx does not decompress",
                                  (unsigned long long)host);
    return 0;
}

/* Fills LEN bytes of IOV at SKIP with what guest offset OFF reads when this layer has nothing:
 * the backing file's data (zeroes past its end) or zeroes. */
static int read_below(struct blk *b, const struct iovec *iov, int iovcnt, size_t skip, uint64_t off,
                      uint64_t len)
{
    uint64_t have = 0;
    /* Layers that leave all of the range to their own backing file are skipped here, so
     * that a deep chain is read without one level of recursion per layer. */
    struct blk *l = b->backing;
    while (l && l->backing && off + len <= l->size) {
        uint64_t pnum, host;
        unsigned st;
        if (blk_block_status(l, off, len, &pnum, &st, &host) < 0 || (st & BLK_STATUS_ALLOCATED) || pnum < len)
            break;
        l = l->backing;
    }
    if (l && off < l->size) {
        have = l->size - off < len ? l->size - off : len;
        uint8_t *tmp = malloc(have);
        if (!tmp)
            return -ENOMEM;
        int r = blk_pread(l, tmp, have, off);
        if (r == 0)
            iov_from_buf(iov, iovcnt, skip, tmp, have);
        free(tmp);
        if (r < 0)
            return blk_set_err(b, r, "%s", l->errmsg);
    }
    if (have < len)
        iov_memset(iov, iovcnt, skip + have, 0, len - have);
    return 0;
}

/* Builds an iovec for LEN bytes of IOV starting at SKIP; returns its count or -1 if it does
 * not fit in QCOW2_MAX_SEGS. */
int qcow2_iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len, struct iovec *out)
{
    int n = 0;
    for (int i = 0; i < iovcnt && len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        if (n == QCOW2_MAX_SEGS)
            return -1;
        size_t l = iov[i].iov_len - skip < len ? iov[i].iov_len - skip : len;
        out[n++] = (struct iovec){ (char *)iov[i].iov_base + skip, l };
        len -= l;
        skip = 0;
    }
    return n;
}

static int read_host(struct blk *b, const struct iovec *iov, int iovcnt, size_t skip, uint64_t host,
                     uint64_t len)
{
    struct iovec seg[QCOW2_MAX_SEGS];
    int n = qcow2_iov_slice(iov, iovcnt, skip, len, seg);
    if (n >= 0) {
        uint64_t done = 0;
        while (done < len) {
            ssize_t got = preadv(blk_data_fd(b, seg, n, host + done, len - done), seg, n,
                                 (off_t)(host + done));
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) { /* a short file reads as zeroes */
                if (got < 0)
                    return blk_set_err(b, -errno, "reading %s: %s", b->path, strerror(errno));
                iov_memset(iov, iovcnt, skip + done, 0, len - done);
                return 0;
            }
            done += (uint64_t)got;
            if (done < len && (n = qcow2_iov_slice(iov, iovcnt, skip + done, len - done, seg)) < 0)
                break;
        }
        if (done >= len)
            return 0;
        skip += done, host += done, len -= done;
    }
    uint8_t *tmp = malloc(len);
    if (!tmp)
        return -ENOMEM;
    int r = file_pread(b->fd, tmp, len, host);
    if (r == 0)
        iov_from_buf(iov, iovcnt, skip, tmp, len);
    free(tmp);
    return r;
}

/* Reads with b->lock held. With UNLOCK_IO the lock is dropped around data reads, so that
 * requests in flight together overlap their I/O; mappings are looked up under the lock. A
 * guest that reads what it is overwriting at the same time gets one or the other, as on a
 * disk. */
int qcow2_read_locked(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len,
                      bool unlock_io)
{
    struct qcow2 *q = Q(b);
    size_t skip = 0;
    while (len) {
        uint64_t in = off & (q->cluster_size - 1),
                 n = q->cluster_size - in < len ? q->cluster_size - in : len;
        uint64_t e;
        int r = qcow2_get_l2_entry(b, off, &e);
        if (r < 0)
            return r;
        uint64_t host = e & L2E_OFFSET_MASK;
        if (e & QCOW_OFLAG_COMPRESSED) {
            if ((r = decompress_cluster(b, e, q->zbuf)) < 0)
                return r;
            iov_from_buf(iov, iovcnt, skip, q->zbuf + in, n);
        } else if (qcow2_entry_is_zero(q, e)) {
            iov_memset(iov, iovcnt, skip, 0, n);
        } else if (!host) {
            if ((r = read_below(b, iov, iovcnt, skip, off, n)) < 0)
                return r;
        } else {
            /* Extend the run while the next clusters follow on the host. */
            uint64_t run = n;
            while (run < len) {
                uint64_t e2, m = len - run < q->cluster_size ? len - run : q->cluster_size;
                if (qcow2_get_l2_entry(b, off + run, &e2) < 0 || (e2 & QCOW_OFLAG_COMPRESSED) ||
                    qcow2_entry_is_zero(q, e2) || (e2 & L2E_OFFSET_MASK) != host + in + run)
                    break;
                run += m;
            }
            n = run;
            if (unlock_io)
                pthread_mutex_unlock(&b->lock);
            r = read_host(b, iov, iovcnt, skip, host + in, n);
            if (unlock_io)
                pthread_mutex_lock(&b->lock);
            if (r < 0)
                return r;
        }
        off += n, len -= n, skip += n;
    }
    return 0;
}

int qcow2_preadv(struct blk *b, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
    pthread_mutex_lock(&b->lock);
    int r = Q(b)->corrupt ? blk_set_err(b, -EIO, "%s is corrupt", b->path)
                          : qcow2_read_locked(b, iov, iovcnt, off, len, true);
    pthread_mutex_unlock(&b->lock);
    return r;
}

int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, unsigned *status,
                       uint64_t *host_off)
{
    struct qcow2 *q = Q(b);
    pthread_mutex_lock(&b->lock);
    uint64_t done = 0, first_host = 0;
    unsigned first = 0;
    int r = 0;
    while (done < len) {
        uint64_t o = off + done, in = o & (q->cluster_size - 1);
        uint64_t n = q->cluster_size - in < len - done ? q->cluster_size - in : len - done, e;
        if ((r = qcow2_get_l2_entry(b, o, &e)) < 0)
            break;
        uint64_t host = e & L2E_OFFSET_MASK;
        unsigned st = e & QCOW_OFLAG_COMPRESSED
                          ? BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_COMPRESSED
                      : qcow2_entry_is_zero(q, e) ? BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED
                      : host                      ? BLK_STATUS_DATA | BLK_STATUS_ALLOCATED
                                                  : 0;
        if (done == 0) {
            first = st;
            first_host = host && !(e & QCOW_OFLAG_COMPRESSED) ? host + in : 0;
        } else if (st != first ||
                   (st == (BLK_STATUS_DATA | BLK_STATUS_ALLOCATED) && host + in != first_host + done) ||
                   (st & BLK_STATUS_COMPRESSED)) {
            break;
        }
        done += n;
        if (st & BLK_STATUS_COMPRESSED)
            break;
    }
    pthread_mutex_unlock(&b->lock);
    *pnum = done;
    *status = first;
    *host_off = first_host;
    return r;
}
