/* qcow2 refcounts: a small LRU cache of cluster-sized tables, refcount reads and updates,
 * allocation at the end of the image, growth of the refcount table, and the consistency
 * check. Metadata is written through as it changes, in an order that leaves at worst leaked
 * clusters after a crash: a cluster's refcount reaches the disk before anything points at it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2.h"

int qcow2_cache_get(struct blk *b, struct table_cache *c, uint64_t offset, uint8_t **table)
{
    struct qcow2 *q = Q(b);
    unsigned victim = 0;
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        if (c->offset[i] == offset) {
            c->used[i] = ++c->clock;
            *table = c->data + (size_t)i * q->cluster_size;
            return 0;
        }
        if (c->used[i] < c->used[victim])
            victim = i;
    }
    uint8_t *t = c->data + (size_t)victim * q->cluster_size;
    int r = file_pread(b->fd, t, q->cluster_size, offset);
    if (r < 0) {
        c->offset[victim] = 0;
        return blk_set_err(b, r, "reading %s: %s", b->path, strerror(-r));
    }
    c->offset[victim] = offset;
    c->used[victim] = ++c->clock;
    *table = t;
    return 0;
}

void qcow2_cache_drop(struct table_cache *c, uint64_t offset)
{
    for (unsigned i = 0; i < CACHE_ENTRIES; i++)
        if (c->offset[i] == offset)
            c->offset[i] = 0, c->used[i] = 0;
}

static uint64_t get_entry(const uint8_t *blk, uint64_t idx, uint32_t bits)
{
    uint64_t bit = idx * bits, v = 0;
    if (bits >= 8) {
        for (uint32_t i = 0; i < bits / 8; i++)
            v = v << 8 | blk[bit / 8 + i];
        return v;
    }
    return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

void qcow2_refblock_set(uint8_t *blk, uint64_t idx, uint32_t bits, uint64_t v)
{
    uint64_t bit = idx * bits;
    if (bits >= 8) {
        for (uint32_t i = 0; i < bits / 8; i++)
            blk[bit / 8 + i] = (uint8_t)(v >> (8 * (bits / 8 - 1 - i)));
        return;
    }
    unsigned shift = (unsigned)(bit % 8);
    uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
    blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << shift) & mask));
}

static int refblock_for(struct blk *b, uint64_t cluster, uint64_t *rb_off)
{
    struct qcow2 *q = Q(b);
    uint64_t idx = cluster / q->rb_entries;
    *rb_off = idx < q->rct_entries ? be64(q->rct[idx]) & L1E_OFFSET_MASK : 0;
    if (*rb_off && (!qcow2_offset_ok(b, *rb_off) || (be64(q->rct[idx]) & 0x1ff)))
        return qcow2_mark_corrupt(b, "refcount block offset %#llx is invalid", (unsigned long long)*rb_off);
    return 0;
}

int qcow2_get_refcount(struct blk *b, uint64_t cluster, uint64_t *rc)
{
    struct qcow2 *q = Q(b);
    uint64_t rb;
    uint8_t *t;
    int r = refblock_for(b, cluster, &rb);
    if (r < 0)
        return r;
    if (!rb) {
        *rc = 0;
        return 0;
    }
    if ((r = qcow2_cache_get(b, &q->rbc, rb, &t)) < 0)
        return r;
    *rc = get_entry(t, cluster % q->rb_entries, q->refcount_bits);
    return 0;
}

static int grow_rct(struct blk *b, uint64_t min_entries);

/* Makes sure a refcount block covers CLUSTER, allocating one at the end of the image when
 * missing. The new block's own refcount is set before anything points at the block: in the
 * block itself when it covers its own cluster, else through the block that does. */
static int ensure_refblock(struct blk *b, uint64_t cluster, uint64_t *rb_off)
{
    struct qcow2 *q = Q(b);
    uint64_t idx = cluster / q->rb_entries;
    int r;
    if (idx >= q->rct_entries && (r = grow_rct(b, idx + 1)) < 0)
        return r;
    if ((r = refblock_for(b, cluster, rb_off)) < 0 || *rb_off)
        return r;
    uint64_t off = q->file_end, self = off / q->cluster_size;
    q->file_end += q->cluster_size; /* reserved before any nested allocation */
    if ((r = qcow2_meta_add(q, off, q->cluster_size, QCOW2_META_REFBLOCK)) < 0)
        return r;
    bool covers_self = self / q->rb_entries == idx;
    if (!covers_self && (r = qcow2_update_refcount(b, off, 1)) < 0)
        return r;
    memset(q->zbuf, 0, q->cluster_size);
    if (covers_self)
        qcow2_refblock_set(q->zbuf, self % q->rb_entries, q->refcount_bits, 1);
    /* Block first, then the table entry that makes it live. */
    if ((r = file_pwrite(b->fd, q->zbuf, q->cluster_size, off)) < 0 || ordered_sync(b) < 0)
        return blk_set_err(b, r ? r : -errno, "writing a refcount block of %s", b->path);
    uint64_t be = htobe64(off);
    if ((r = file_pwrite(b->fd, &be, 8, q->rct_offset + idx * 8)) < 0)
        return blk_set_err(b, r, "writing the refcount table of %s", b->path);
    q->rct[idx] = be;
    qcow2_cache_drop(&q->rbc, off);
    *rb_off = off;
    return 0;
}

int qcow2_update_refcount(struct blk *b, uint64_t offset, int64_t delta)
{
    struct qcow2 *q = Q(b);
    uint64_t cluster = offset / q->cluster_size, rb;
    uint8_t *t;
    int r = ensure_refblock(b, cluster, &rb);
    if (r < 0 || (r = qcow2_meta_check_write(b, rb, q->cluster_size, QCOW2_META_REFBLOCK)) < 0 ||
        (r = qcow2_cache_get(b, &q->rbc, rb, &t)) < 0)
        return r;
    uint64_t idx = cluster % q->rb_entries, v = get_entry(t, idx, q->refcount_bits);
    if ((delta < 0 && v < (uint64_t)-delta) || (delta > 0 && q->refcount_max - v < (uint64_t)delta))
        return qcow2_mark_corrupt(b, "refcount of cluster %#llx would %s", (unsigned long long)offset,
                                  delta < 0 ? "go below zero" : "overflow");
    qcow2_refblock_set(t, idx, q->refcount_bits, v + (uint64_t)delta);
    if (v + (uint64_t)delta == 0)
        qcow2_meta_free_cluster(q, cluster); /* free: whatever metadata it held is gone */
    /* Write the bytes holding the entry (a whole byte for sub-byte widths). */
    uint64_t first = idx * q->refcount_bits / 8, len = q->refcount_bits >= 8 ? q->refcount_bits / 8 : 1;
    r = file_pwrite(b->fd, t + first, len, rb + first);
    return r < 0 ? blk_set_err(b, r, "writing a refcount of %s: %s", b->path, strerror(-r)) : 0;
}

int qcow2_alloc_clusters(struct blk *b, uint64_t n, uint64_t *offset)
{
    struct qcow2 *q = Q(b);
    int r;
    /* Refcount blocks the new range needs come first, so the range stays contiguous. */
    for (;;) {
        uint64_t start = q->file_end / q->cluster_size, rb;
        uint64_t before = q->file_end;
        for (uint64_t c = start; c < start + n; c += q->rb_entries - c % q->rb_entries)
            if ((r = ensure_refblock(b, c, &rb)) < 0)
                return r;
        if ((r = ensure_refblock(b, start + n - 1, &rb)) < 0)
            return r;
        if (q->file_end == before)
            break;
    }
    *offset = q->file_end;
    /* New clusters are free (past the end of the image): set their refcounts to 1, one
     * write per refcount block. */
    uint64_t c = *offset / q->cluster_size, end = c + n;
    while (c < end) {
        uint64_t rb;
        uint8_t *t;
        if ((r = refblock_for(b, c, &rb)) < 0 ||
            (r = qcow2_meta_check_write(b, rb, q->cluster_size, QCOW2_META_REFBLOCK)) < 0 ||
            (r = qcow2_cache_get(b, &q->rbc, rb, &t)) < 0)
            return r;
        uint64_t first = c % q->rb_entries, last = first;
        for (; c < end && last < q->rb_entries; c++, last++)
            qcow2_refblock_set(t, last, q->refcount_bits, 1);
        uint64_t lo = first * q->refcount_bits / 8, hi = (last * q->refcount_bits + 7) / 8;
        if ((r = file_pwrite(b->fd, t + lo, hi - lo, rb + lo)) < 0)
            return blk_set_err(b, r, "writing refcounts of %s: %s", b->path, strerror(-r));
    }
    q->file_end += n * q->cluster_size;
    return 0;
}

/* A bigger refcount table: new table and the refcount blocks that describe it are laid out
 * together at the end of the image, written, synced, and only then does the header point at
 * them. A crash before that leaves leaked clusters and the old table intact. */
static int grow_rct(struct blk *b, uint64_t min_entries)
{
    struct qcow2 *q = Q(b);
    uint64_t entries = q->rct_entries * 2 > min_entries ? q->rct_entries * 2 : min_entries;
    uint64_t cs = q->cluster_size, tclusters = (entries * 8 + cs - 1) / cs;
    if (tclusters * cs > QCOW2_MAX_RCT_BYTES)
        return blk_set_err(b, -EFBIG, "%s: refcount table would exceed %u MiB", b->path,
                           QCOW2_MAX_RCT_BYTES >> 20);
    entries = tclusters * cs / 8;
    /* nblocks grows to exactly the number of new blocks the area needs: every block in it
     * gets a table entry, so none is left unreferenced. */
    uint64_t start = q->file_end / cs, nblocks = 0, total;
    for (;;) {
        total = nblocks + tclusters;
        uint64_t first = start / q->rb_entries, last = (start + total - 1) / q->rb_entries, need = 0;
        for (uint64_t i = first; i <= last; i++)
            if (i >= q->rct_entries || !q->rct[i])
                need++;
        if (need == nblocks)
            break;
        nblocks = need;
    }
    uint8_t *area = calloc(total, cs);
    if (!area)
        return -ENOMEM;
    uint64_t *table = (uint64_t *)(area + nblocks * cs);
    memcpy(table, q->rct, q->rct_entries * 8);
    /* Refcounts for the area's clusters: in new blocks where the old table has none. */
    uint64_t nb = 0;
    for (uint64_t i = start / q->rb_entries; i <= (start + total - 1) / q->rb_entries; i++) {
        if (i < q->rct_entries && q->rct[i])
            continue;
        table[i] = htobe64((start + nb) * cs);
        nb++;
    }
    int r = 0;
    for (uint64_t c = start; c < start + total && r == 0; c++) {
        uint64_t i = c / q->rb_entries;
        if (i < q->rct_entries && q->rct[i]) {
            r = qcow2_update_refcount(b, c * cs, 1); /* an existing block covers it */
        } else {
            uint64_t blk = be64(table[i]) / cs - start;
            qcow2_refblock_set(area + blk * cs, c % q->rb_entries, q->refcount_bits, 1);
        }
    }
    for (uint64_t k = 0; r == 0 && k < nblocks; k++)
        r = qcow2_meta_add(q, (start + k) * cs, cs, QCOW2_META_REFBLOCK);
    if (r == 0)
        r = qcow2_meta_add(q, (start + nblocks) * cs, tclusters * cs, QCOW2_META_FIXED);
    if (r == 0)
        r = file_pwrite(b->fd, area, total * cs, start * cs);
    if (r == 0 && ordered_sync(b) < 0)
        r = -errno;
    uint8_t hdr[12];
    uint64_t off = htobe64((start + nblocks) * cs);
    uint32_t ncl = htobe32((uint32_t)tclusters);
    memcpy(hdr, &off, 8), memcpy(hdr + 8, &ncl, 4);
    if (r == 0)
        r = qcow2_write_header_field(b, 48, hdr, 12);
    if (r == 0 && ordered_sync(b) < 0)
        r = -errno;
    if (r < 0) {
        free(area);
        return blk_set_err(b, r, "growing the refcount table of %s: %s", b->path, strerror(-r));
    }
    uint64_t old_off = q->rct_offset, old_clusters = q->rct_clusters;
    uint64_t *nt = malloc(entries * 8);
    if (!nt) {
        free(area);
        return -ENOMEM;
    }
    memcpy(nt, table, entries * 8);
    free(area);
    free(q->rct);
    q->rct = nt, q->rct_entries = entries, q->rct_offset = (start + nblocks) * cs;
    q->rct_clusters = (uint32_t)tclusters;
    q->file_end = (start + total) * cs;
    for (uint64_t i = 0; i < old_clusters; i++)
        qcow2_update_refcount(b, old_off + i * cs, -1);
    return 0;
}
