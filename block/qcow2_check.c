/* qcow2 consistency check and repair, what qemu-img check checks and repairs:
 *   1. count every reference to every cluster (header, L1 and L2 tables, data, snapshot
 *      table and snapshots' tables, refcount table and blocks);
 *   2. compare with the stored refcounts: leaks are lowered, missing references raised; a
 *      refcount structure that is itself broken (a refcount block misaligned, past the end
 *      of the file, or a cluster that something else uses too) is rebuilt from the counts;
 *   3. the COPIED flags of the active L1 and L2 entries must say "refcount is 1" exactly
 *      when it is (else a write in place changes what a snapshot or another entry sees).
 * With BLK_REPAIR_ERRORS the image is left so that qemu-img check finds it clean. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2.h"

struct counter {
    struct blk *b;
    uint32_t *refs; /* references per cluster, refcount structures included */
    uint64_t n;     /* clusters in the file */
    struct blk_check_result *res;
    bool *bad_rb;         /* per refcount-table entry: unusable refcount block */
    bool rebuild;         /* the refcount structure itself is broken */
    uint64_t rc_problems; /* corruptions a rebuilt refcount structure repairs */
    unsigned repair;
};

static void note(struct blk_check_result *res, const char *fmt, uint64_t v)
{
    if (!res->first_problem[0])
        snprintf(res->first_problem, sizeof(res->first_problem), fmt, (unsigned long long)v);
}

static void problem(struct counter *c, const char *fmt, uint64_t v)
{
    c->res->corruptions++;
    note(c->res, fmt, v);
}

/* Counts a reference to LEN bytes at OFF; false (and a problem) when past the file. */
static bool ref(struct counter *c, uint64_t off, uint64_t len, const char *what)
{
    struct qcow2 *q = Q(c->b);
    uint64_t first = off / q->cluster_size, last = (off + len - 1) / q->cluster_size;
    if (last >= c->n || off + len < off) {
        problem(c, what, off);
        return false;
    }
    for (uint64_t i = first; i <= last; i++)
        if (c->refs[i] < UINT32_MAX)
            c->refs[i]++;
    uint64_t end = (last + 1) * q->cluster_size;
    if (end > c->res->image_end_offset)
        c->res->image_end_offset = end;
    return true;
}

static void compressed_span(struct qcow2 *q, uint64_t e, uint64_t *host, uint64_t *len)
{
    unsigned x = 62 - (q->cluster_bits - 8);
    uint64_t sectors = ((e >> x) & ((1ULL << (62 - x)) - 1)) + 1;
    *host = e & ((1ULL << x) - 1);
    *len = sectors * 512 - (*host & 511);
}

static bool safe_l2(struct qcow2 *q, uint64_t off);

/* NEXT: where the previous data cluster of the active table ended, for the fragmentation
 * statistics (qemu-img's: a cluster not right after the previous one is fragmented, and so
 * is every compressed cluster). */
static int count_l2(struct counter *c, uint64_t l2_off, bool active, uint64_t *next)
{
    struct qcow2 *q = Q(c->b);
    uint64_t *l2 = malloc(q->cluster_size);
    if (!l2)
        return -ENOMEM;
    int r = file_pread(c->b->fd, l2, q->cluster_size, l2_off);
    for (uint32_t i = 0; r == 0 && i < q->l2_entries; i++) {
        uint64_t e = be64(l2[i]);
        if (e & QCOW_OFLAG_COMPRESSED) {
            uint64_t host, len;
            compressed_span(q, e, &host, &len);
            ref(c, host, len, "compressed cluster at %#llx is past the end of the file");
            if (active)
                c->res->allocated_clusters++, c->res->compressed_clusters++, c->res->fragmented_clusters++;
            continue;
        }
        uint64_t host = e & L2E_OFFSET_MASK;
        if (!host)
            continue;
        if (host & (q->cluster_size - 1)) {
            /* Counted anyway, over the clusters it touches (as qemu-img does): a repair must
             * not free what the entry may still point at. A preallocated zero cluster loses
             * its offset instead, when repairing. */
            problem(c, "data cluster offset %#llx is not cluster-aligned", host);
            if (active && (c->repair & BLK_REPAIR_ERRORS) && qcow2_entry_is_zero(q, e) &&
                safe_l2(q, l2_off) &&
                file_pwrite(c->b->fd, &(uint64_t){ htobe64(QCOW_OFLAG_ZERO) }, 8, l2_off + 8ULL * i) == 0) {
                c->res->corruptions--, c->res->corruptions_fixed++;
                qcow2_cache_drop(&q->l2c, l2_off);
                continue;
            }
        }
        ref(c, host, q->cluster_size, "data cluster at %#llx is past the end of the file");
        if (active) {
            c->res->allocated_clusters++;
            c->res->fragmented_clusters += *next && host != *next;
            *next = host + q->cluster_size;
        }
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
    uint64_t next = 0;
    ref(c, l1_off, (uint64_t)l1_size * 8, "L1 table at %#llx is past the end of the file");
    for (uint32_t i = 0; r == 0 && i < l1_size; i++) {
        uint64_t l2 = be64(l1[i]) & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if (l2 & (q->cluster_size - 1))
            problem(c, "L2 table offset %#llx is not cluster-aligned", l2); /* and read as qemu-img does */
        if (ref(c, l2, q->cluster_size, "L2 table at %#llx is past the end of the file"))
            r = count_l2(c, l2, active, &next);
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
        off += (40 + (uint64_t)extra + id_len + name_len + 7) & ~7ULL;
    }
    if (q->nb_snapshots)
        ref(c, q->snapshots_offset, off - q->snapshots_offset, "snapshot table at %#llx is past the end");
    return 0;
}

/* The refcount table and the blocks it names. A block that is misaligned, past the end of
 * the file or shared with anything else makes the structure unusable: it is rebuilt. */
static void count_refcount_structure(struct counter *c)
{
    struct qcow2 *q = Q(c->b);
    ref(c, q->rct_offset, (uint64_t)q->rct_clusters * q->cluster_size,
        "refcount table at %#llx is past the end");
    for (uint64_t i = 0; i < q->rct_entries; i++) {
        uint64_t rb = be64(q->rct[i]) & L1E_OFFSET_MASK;
        if (!rb)
            continue;
        if (rb & (q->cluster_size - 1) || (be64(q->rct[i]) & 0x1ff)) {
            problem(c, "refcount block offset %#llx is not cluster-aligned", rb);
            c->bad_rb[i] = c->rebuild = true;
            c->rc_problems++;
        } else if (rb / q->cluster_size >= c->n) {
            problem(c, "refcount block at %#llx is past the end of the file", rb);
            c->bad_rb[i] = c->rebuild = true;
            c->rc_problems++;
        } else {
            ref(c, rb, q->cluster_size, "refcount block at %#llx");
        }
    }
}

/* After every reference is counted: a refcount block anything else uses too is broken. */
static void shared_refblocks(struct counter *c)
{
    struct qcow2 *q = Q(c->b);
    for (uint64_t i = 0; i < q->rct_entries; i++) {
        uint64_t rb = be64(q->rct[i]) & L1E_OFFSET_MASK;
        if (rb && !c->bad_rb[i] && c->refs[rb / q->cluster_size] != 1) {
            problem(c, "refcount block at %#llx is used by something else too", rb);
            c->bad_rb[i] = c->rebuild = true;
            c->rc_problems++;
        }
    }
}

static int compare_and_repair(struct counter *c, unsigned repair)
{
    struct qcow2 *q = Q(c->b);
    for (uint64_t i = 0; i < c->n; i++) {
        uint64_t rc, idx = i / q->rb_entries;
        if (idx < q->rct_entries && c->bad_rb[idx])
            continue; /* no refcount to read: reported, and rebuilt when repairing */
        int r = qcow2_get_refcount(c->b, i, &rc);
        if (r < 0)
            return r;
        if (rc == c->refs[i])
            continue;
        /* What is repaired counts as fixed, what is not as found (qemu-img's way). */
        if (rc > c->refs[i]) {
            if ((repair & BLK_REPAIR_LEAKS) &&
                qcow2_update_refcount(c->b, i * q->cluster_size, -(int64_t)(rc - c->refs[i])) == 0)
                c->res->leaks_fixed++;
            else
                c->res->leaks++;
        } else {
            problem(c, "cluster %#llx is referenced more often than its refcount says", i * q->cluster_size);
            c->rc_problems++;
            if ((repair & BLK_REPAIR_ERRORS) &&
                qcow2_update_refcount(c->b, i * q->cluster_size, (int64_t)(c->refs[i] - rc)) == 0)
                c->res->corruptions--, c->res->corruptions_fixed++;
        }
    }
    return 0;
}

/* A new refcount table and blocks at the end of the file, holding exactly the counted
 * references (the old structure's own clusters are free afterwards), written and synced
 * before the header switches to them. */
static int rebuild(struct counter *c)
{
    struct blk *b = c->b;
    struct qcow2 *q = Q(b);
    uint64_t cs = q->cluster_size, rbe = q->rb_entries;
    /* The old structure no longer counts (its blocks that were counted, shared or not). */
    for (uint64_t i = 0; i < q->rct_entries; i++) {
        uint64_t rb = be64(q->rct[i]) & L1E_OFFSET_MASK;
        if (rb && !(rb & (cs - 1)) && !(be64(q->rct[i]) & 0x1ff) && rb / cs < c->n && c->refs[rb / cs])
            c->refs[rb / cs]--;
    }
    for (uint64_t k = 0; k < q->rct_clusters && q->rct_offset / cs + k < c->n; k++)
        if (c->refs[q->rct_offset / cs + k])
            c->refs[q->rct_offset / cs + k]--;
    uint64_t start = c->n, nb = 1, tc = 1;
    for (;;) { /* blocks for every cluster, the new ones included, and a table for them */
        uint64_t need_nb = (start + nb + tc + rbe - 1) / rbe, need_tc = (need_nb * 8 + cs - 1) / cs;
        if (need_nb == nb && need_tc == tc)
            break;
        nb = need_nb, tc = need_tc;
    }
    if (tc * cs > QCOW2_MAX_RCT_BYTES)
        return blk_set_err(b, -EFBIG, "%s: a rebuilt refcount table would exceed %u MiB", b->path,
                           QCOW2_MAX_RCT_BYTES >> 20);
    uint8_t *area = calloc(nb + tc, cs);
    if (!area)
        return -ENOMEM;
    uint64_t *table = (uint64_t *)(area + nb * cs);
    int r = 0;
    for (uint64_t cl = 0; r == 0 && cl < start + nb + tc; cl++) {
        uint64_t v = cl < start ? c->refs[cl] : 1;
        if (v > q->refcount_max)
            r = blk_set_err(b, -ERANGE,
                            "%s: cluster %#llx has %llu references, more than %u-bit refcounts hold", b->path,
                            (unsigned long long)(cl * cs), (unsigned long long)v, q->refcount_bits);
        qcow2_refblock_set(area + (cl / rbe) * cs, cl % rbe, q->refcount_bits, v);
    }
    for (uint64_t k = 0; k < nb; k++)
        table[k] = htobe64((start + k) * cs);
    if (r == 0)
        r = file_pwrite(b->fd, area, (nb + tc) * cs, start * cs);
    if (r == 0 && fdatasync(b->fd) < 0)
        r = -errno;
    uint8_t hdr[12];
    uint64_t off = htobe64((start + nb) * cs);
    uint32_t ncl = htobe32((uint32_t)tc);
    memcpy(hdr, &off, 8), memcpy(hdr + 8, &ncl, 4);
    if (r == 0 && (r = qcow2_write_header_field(b, 48, hdr, 12)) == 0 && fdatasync(b->fd) < 0)
        r = -errno;
    uint64_t *nt = r == 0 ? malloc(tc * cs) : NULL;
    if (r == 0 && !nt)
        r = -ENOMEM;
    if (r < 0) {
        free(area);
        return r;
    }
    memcpy(nt, table, tc * cs);
    free(area);
    free(q->rct);
    q->rct = nt, q->rct_entries = tc * cs / 8, q->rct_offset = (start + nb) * cs,
    q->rct_clusters = (uint32_t)tc;
    q->file_end = (start + nb + tc) * cs;
    for (unsigned i = 0; i < CACHE_ENTRIES; i++)
        q->rbc.offset[i] = 0, q->rbc.used[i] = 0;
    return q->meta ? qcow2_meta_build(b) : 0; /* the old structure is metadata no more */
}

/* A table may be rewritten only where nothing but an L2 table lives. */
static bool safe_l2(struct qcow2 *q, uint64_t off)
{
    uint64_t where;
    uint8_t kind = qcow2_meta_find(q, off, q->cluster_size, &where);
    if (kind && kind != QCOW2_META_L2)
        return false;
    uint64_t l1_end = q->l1_offset + (uint64_t)q->l1_size * 8,
             rct_end = q->rct_offset + (uint64_t)q->rct_clusters * q->cluster_size;
    return off >= q->cluster_size && !(off + q->cluster_size > q->l1_offset && off < l1_end) &&
           !(off + q->cluster_size > q->rct_offset && off < rct_end);
}

/* One entry's COPIED flag against its cluster's refcount: the entry as it should be. */
static uint64_t copied_as_it_should(struct blk *b, uint64_t e, uint64_t cluster_off, bool *mismatch, int *err)
{
    uint64_t rc;
    *mismatch = false;
    if ((*err = qcow2_get_refcount(b, cluster_off / Q(b)->cluster_size, &rc)) < 0)
        return e;
    bool want = rc == 1;
    *mismatch = want != !!(e & QCOW_OFLAG_COPIED);
    return want ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
}

int qcow2_sync_copied(struct blk *b, bool fix, struct blk_check_result *res)
{
    struct qcow2 *q = Q(b);
    uint64_t *l2 = malloc(q->cluster_size);
    if (!l2)
        return -ENOMEM;
    int r = 0;
    for (uint32_t i = 0; r == 0 && i < q->l1_size; i++) {
        uint64_t e1 = be64(q->l1[i]), t = e1 & L1E_OFFSET_MASK;
        bool bad;
        if (!t || t >= q->file_end)
            continue; /* reported by the count */
        uint64_t ne1 = copied_as_it_should(b, e1, t & ~((uint64_t)q->cluster_size - 1), &bad, &r);
        if (r == 0 && bad) {
            note(res, "OFLAG_COPIED of the L1 entry for the L2 table at %#llx does not match its refcount",
                 t);
            if (!fix) {
                res->corruptions++;
            } else if ((r = file_pwrite(b->fd, &(uint64_t){ htobe64(ne1) }, 8, q->l1_offset + 8ULL * i)) ==
                       0) {
                q->l1[i] = htobe64(ne1);
                res->corruptions_fixed++;
            }
        }
        if (r < 0 || (r = file_pread(b->fd, l2, q->cluster_size, t)) < 0)
            break;
        bool dirty = false;
        for (uint32_t j = 0; r == 0 && j < q->l2_entries; j++) {
            uint64_t e = be64(l2[j]), ne = e, host = e & L2E_OFFSET_MASK;
            if (e & QCOW_OFLAG_COMPRESSED) {
                bad = e & QCOW_OFLAG_COPIED; /* never set on compressed clusters */
                ne = e & ~QCOW_OFLAG_COPIED;
            } else if (host && host < q->file_end) {
                ne = copied_as_it_should(b, e, host & ~((uint64_t)q->cluster_size - 1), &bad, &r);
            } else {
                continue;
            }
            if (r < 0 || !bad)
                continue;
            note(res, "OFLAG_COPIED of the L2 entry %#llx does not match its refcount", e);
            if (fix && safe_l2(q, t)) {
                l2[j] = htobe64(ne);
                dirty = true;
                res->corruptions_fixed++;
            } else {
                res->corruptions++;
            }
        }
        if (r == 0 && dirty) {
            r = file_pwrite(b->fd, l2, q->cluster_size, t);
            qcow2_cache_drop(&q->l2c, t);
        }
    }
    free(l2);
    return r;
}

int qcow2_check(struct blk *b, unsigned repair, struct blk_check_result *res)
{
    struct qcow2 *q = Q(b);
    struct counter c = { .b = b, .res = res, .n = q->file_end / q->cluster_size, .repair = repair };
    c.refs = calloc(c.n ? c.n : 1, sizeof(uint32_t));
    c.bad_rb = calloc(q->rct_entries ? q->rct_entries : 1, sizeof(bool));
    if (!c.refs || !c.bad_rb) {
        free(c.refs), free(c.bad_rb);
        return blk_set_err(b, -ENOMEM, "out of memory checking %s", b->path);
    }
    ref(&c, 0, q->cluster_size, "header");
    int r = count_l1(&c, q->l1_offset, q->l1_size, true);
    if (r == 0)
        r = count_snapshots(&c);
    if (r == 0) {
        count_refcount_structure(&c);
        shared_refblocks(&c);
    }
    res->total_clusters = (b->size + q->cluster_size - 1) / q->cluster_size;
    if (r == 0 && c.rebuild && (repair & BLK_REPAIR_ERRORS)) {
        /* What the readable blocks say wrong is counted, then all of it is replaced. */
        if ((r = compare_and_repair(&c, 0)) == 0 && (r = rebuild(&c)) == 0) {
            res->corruptions -= c.rc_problems, res->corruptions_fixed += c.rc_problems;
            res->leaks_fixed += res->leaks, res->leaks = 0;
        }
    } else if (r == 0) {
        r = compare_and_repair(&c, repair);
    }
    /* The flags are judged by the refcounts as repaired (as qemu-img does); with a broken
     * refcount structure left as it is there is nothing to judge them by. */
    if (r == 0 && !(c.rebuild && !(repair & BLK_REPAIR_ERRORS)))
        r = qcow2_sync_copied(b, repair & BLK_REPAIR_ERRORS, res);
    if (r == 0 && repair && fdatasync(b->fd) < 0)
        r = -errno;
    /* A repair that leaves no corruption (what qemu-img does) lifts the corrupt mark. */
    if (r == 0 && repair && !res->corruptions && !res->check_errors)
        r = qcow2_mark_consistent(b);
    free(c.refs);
    free(c.bad_rb);
    return r;
}
