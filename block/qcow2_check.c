/* qcow2 consistency check: count every reference to every cluster (header, L1 and L2
 * tables, data, refcount table and blocks, snapshot table and snapshots' tables), compare
 * with the stored refcounts, and repair when asked: leaks by lowering refcounts, missing
 * references (corruption) by raising them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2.h"

struct counter {
    struct blk *b;
    uint32_t *refs;
    uint64_t n;                 /* clusters in the file */
    struct blk_check_result *res;
};

static void problem(struct counter *c, const char *fmt, uint64_t v)
{
    c->res->corruptions++;
    if (!c->res->first_problem[0])
        snprintf(c->res->first_problem, sizeof(c->res->first_problem), fmt, (unsigned long long)v);
}

/* Counts a reference to LEN bytes at OFF. */
static void ref(struct counter *c, uint64_t off, uint64_t len, const char *what)
{
    struct qcow2 *q = Q(c->b);
    uint64_t first = off / q->cluster_size, last = (off + len - 1) / q->cluster_size;
    if (last >= c->n) {
        problem(c, what, off);
        return;
    }
    for (uint64_t i = first; i <= last; i++)
        if (c->refs[i] < UINT32_MAX)
            c->refs[i]++;
    uint64_t end = (last + 1) * q->cluster_size;
    if (end > c->res->image_end_offset)
        c->res->image_end_offset = end;
}

static int count_l2(struct counter *c, uint64_t l2_off, bool active)
{
    struct qcow2 *q = Q(c->b);
    uint64_t *l2 = malloc(q->cluster_size);
    if (!l2)
        return -ENOMEM;
    int r = file_pread(c->b->fd, l2, q->cluster_size, l2_off);
    for (uint32_t i = 0; r == 0 && i < q->l2_entries; i++) {
        uint64_t e = be64(l2[i]);
        if (e & QCOW_OFLAG_COMPRESSED) {
            unsigned x = 62 - (q->cluster_bits - 8);
            uint64_t host = e & ((1ULL << x) - 1), sectors = ((e >> x) & ((1ULL << (62 - x)) - 1)) + 1;
            ref(c, host, sectors * 512 - (host & 511), "compressed cluster at %#llx is past the end of the file");
            if (active)
                c->res->allocated_clusters++, c->res->compressed_clusters++;
            continue;
        }
        uint64_t host = e & L2E_OFFSET_MASK;
        if (!host)
            continue;
        if (host & (q->cluster_size - 1)) {
            problem(c, "data cluster offset %#llx is not cluster-aligned", host);
            continue;
        }
        ref(c, host, q->cluster_size, "data cluster at %#llx is past the end of the file");
        if (active)
            c->res->allocated_clusters++;
    }
    free(l2);
    return r;
}

static int count_l1(struct counter *c, uint64_t l1_off, uint32_t l1_size, bool active)
{
    struct qcow2 *q = Q(c->b);
    if (!l1_size)
        return 0;
    uint64_t *l1 = active ? q->l1 : malloc((size_t)l1_size * 8);
    if (!l1)
        return -ENOMEM;
    int r = active ? 0 : file_pread(c->b->fd, l1, (size_t)l1_size * 8, l1_off);
    ref(c, l1_off, (uint64_t)l1_size * 8, "L1 table at %#llx is past the end of the file");
    for (uint32_t i = 0; r == 0 && i < l1_size; i++) {
        uint64_t l2 = be64(l1[i]) & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if (l2 & (q->cluster_size - 1) || l2 / q->cluster_size >= c->n) {
            problem(c, "L2 table offset %#llx is invalid", l2);
            continue;
        }
        ref(c, l2, q->cluster_size, "L2 table at %#llx is past the end of the file");
        r = count_l2(c, l2, active);
    }
    if (!active)
        free(l1);
    return r;
}

static int count_snapshots(struct counter *c)
{
    struct qcow2 *q = Q(c->b);
    uint64_t off = q->snapshots_offset;
    for (uint32_t s = 0; s < q->nb_snapshots; s++) {
        uint8_t h[40];
        int r = file_pread(c->b->fd, h, sizeof(h), off);
        if (r < 0)
            return r;
        uint64_t l1_off;
        uint32_t l1_size, extra;
        uint16_t id_len, name_len;
        memcpy(&l1_off, h, 8), memcpy(&l1_size, h + 8, 4), memcpy(&id_len, h + 12, 2);
        memcpy(&name_len, h + 14, 2), memcpy(&extra, h + 36, 4);
        l1_off = be64toh(l1_off), l1_size = be32toh(l1_size);
        id_len = be16toh(id_len), name_len = be16toh(name_len), extra = be32toh(extra);
        if ((uint64_t)l1_size * 8 > QCOW2_MAX_L1_BYTES || (l1_size && (l1_off & (q->cluster_size - 1)))) {
            problem(c, "snapshot L1 table at %#llx is invalid", l1_off);
        } else if ((r = count_l1(c, l1_off, l1_size, false)) < 0) {
            return r;
        }
        off += (40 + extra + id_len + name_len + 7) & ~7ULL;
    }
    if (q->nb_snapshots)
        ref(c, q->snapshots_offset, off - q->snapshots_offset, "snapshot table at %#llx is past the end");
    return 0;
}

static int compare_and_repair(struct counter *c, unsigned repair)
{
    struct qcow2 *q = Q(c->b);
    for (uint64_t i = 0; i < c->n; i++) {
        uint64_t rc;
        int r = qcow2_get_refcount(c->b, i, &rc);
        if (r < 0)
            return r;
        if (rc == c->refs[i])
            continue;
        if (rc > c->refs[i]) {
            c->res->leaks++;
            if ((repair & BLK_REPAIR_LEAKS) && qcow2_update_refcount(c->b, i * q->cluster_size, -(int64_t)(rc - c->refs[i])) == 0)
                c->res->leaks_fixed++;
        } else {
            problem(c, "cluster %#llx is referenced more often than its refcount says", i * q->cluster_size);
            if ((repair & BLK_REPAIR_ERRORS) && qcow2_update_refcount(c->b, i * q->cluster_size, (int64_t)(c->refs[i] - rc)) == 0)
                c->res->corruptions_fixed++;
        }
    }
    return 0;
}

int qcow2_check(struct blk *b, unsigned repair, struct blk_check_result *res)
{
    struct qcow2 *q = Q(b);
    struct counter c = { .b = b, .res = res, .n = q->file_end / q->cluster_size };
    c.refs = calloc(c.n ? c.n : 1, sizeof(uint32_t));
    if (!c.refs)
        return blk_set_err(b, -ENOMEM, "out of memory checking %s", b->path);
    ref(&c, 0, q->cluster_size, "header");
    int r = count_l1(&c, q->l1_offset, q->l1_size, true);
    if (r == 0)
        r = count_snapshots(&c);
    ref(&c, q->rct_offset, (uint64_t)q->rct_clusters * q->cluster_size, "refcount table at %#llx is past the end");
    for (uint64_t i = 0; r == 0 && i < q->rct_entries; i++) {
        uint64_t rb = be64(q->rct[i]) & L1E_OFFSET_MASK;
        if (!rb)
            continue;
        if (rb & (q->cluster_size - 1) || rb / q->cluster_size >= c.n)
            problem(&c, "refcount block offset %#llx is invalid", rb);
        else
            ref(&c, rb, q->cluster_size, "refcount block at %#llx");
    }
    res->total_clusters = (b->size + q->cluster_size - 1) / q->cluster_size;
    if (r == 0)
        r = compare_and_repair(&c, repair);
    if (r == 0 && repair && fdatasync(b->fd) < 0)
        r = -errno;
    free(c.refs);
    return r;
}
