/* Which host clusters of a writable qcow2 image hold metadata, so that every write can be
 * checked against all of it cheaply (QEMU's "overlap check", docs/interop/qcow2.txt): the
 * header, the active and the snapshots' L1 tables, the active and the snapshots' L2 tables,
 * the refcount table and blocks, the snapshot table.
 *
 * A sorted array of (cluster, kind), built at open and kept up to date as metadata is
 * allocated (always at the end of the file: appending keeps it sorted) and freed (a cluster
 * whose refcount drops to 0 leaves it). A write is checked with one binary search for its
 * whole host range. Metadata clusters are few (one L2 table per 8192 data clusters with 64
 * KiB clusters), so the array is small; it costs nothing for read-only images, which have
 * none. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2.h"

/* Reading the snapshots' L1 tables at open (for their L2 tables) stops at this many bytes;
 * QEMU's default overlap check leaves the snapshots' L2 tables out altogether. */
#define META_SNAPSHOT_L1_BUDGET (64u << 20)

struct qcow2_meta {
    uint64_t *cl;  /* cluster indexes, ascending */
    uint8_t *kind; /* QCOW2_META_* of each */
    size_t n, cap;
};

/* The first index whose cluster is >= C. */
static size_t lower_bound(const struct qcow2_meta *m, uint64_t c)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->cl[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int grow(struct qcow2_meta *m)
{
    size_t cap = m->cap ? 2 * m->cap : 256;
    uint64_t *cl = realloc(m->cl, cap * sizeof(*cl));
    if (!cl)
        return -ENOMEM;
    m->cl = cl;
    uint8_t *kind = realloc(m->kind, cap);
    if (!kind)
        return -ENOMEM;
    m->kind = kind, m->cap = cap;
    return 0;
}

/* Two kinds in one cluster make it a conflict: nothing may write there any more. */
static uint8_t merge(uint8_t a, uint8_t b)
{
    return a == b ? a : QCOW2_META_CONFLICT;
}

int qcow2_meta_add(struct qcow2 *q, uint64_t off, uint64_t len, uint8_t kind)
{
    struct qcow2_meta *m = q->meta;
    if (!m || !len)
        return 0;
    uint64_t first = off >> q->cluster_bits, last = (off + len - 1) >> q->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        size_t i = m->n && m->cl[m->n - 1] < c ? m->n : lower_bound(m, c);
        if (i < m->n && m->cl[i] == c) {
            m->kind[i] = merge(m->kind[i], kind);
            continue;
        }
        if (m->n == m->cap && grow(m) < 0)
            return -ENOMEM;
        memmove(m->cl + i + 1, m->cl + i, (m->n - i) * sizeof(*m->cl));
        memmove(m->kind + i + 1, m->kind + i, m->n - i);
        m->cl[i] = c, m->kind[i] = kind;
        m->n++;
    }
    return 0;
}

void qcow2_meta_free_cluster(struct qcow2 *q, uint64_t cluster)
{
    struct qcow2_meta *m = q->meta;
    if (!m)
        return;
    size_t i = lower_bound(m, cluster);
    if (i < m->n && m->cl[i] == cluster) {
        memmove(m->cl + i, m->cl + i + 1, (m->n - i - 1) * sizeof(*m->cl));
        memmove(m->kind + i, m->kind + i + 1, m->n - i - 1);
        m->n--;
    }
}

uint8_t qcow2_meta_find(const struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *where)
{
    const struct qcow2_meta *m = q->meta;
    if (!m || !len)
        return 0;
    uint64_t first = off >> q->cluster_bits, last = (off + len - 1) >> q->cluster_bits;
    size_t i = lower_bound(m, first);
    if (i == m->n || m->cl[i] > last)
        return 0;
    *where = m->cl[i] << q->cluster_bits;
    return m->kind[i];
}

const char *qcow2_meta_name(uint8_t kind)
{
    switch (kind) {
    case QCOW2_META_L2: return "an L2 table";
    case QCOW2_META_REFBLOCK: return "a refcount block";
    case QCOW2_META_FIXED: return "the header, an L1 table, the refcount table or the snapshot table";
    default: return "two kinds of metadata at once";
    }
}

/* The L2 tables an L1 table names (entries that are invalid are left to the checks that
 * use them). */
static int add_l2_tables(struct blk *b, const uint64_t *l1, uint32_t n)
{
    struct qcow2 *q = Q(b);
    int r = 0;
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        uint64_t t = be64(l1[i]) & L1E_OFFSET_MASK;
        if (t && !(t & (q->cluster_size - 1)) && t < q->file_end)
            r = qcow2_meta_add(q, t, q->cluster_size, QCOW2_META_L2);
    }
    return r;
}

/* The snapshot table and each snapshot's L1 table, and (within the budget) its L2 tables. */
static int add_snapshots(struct blk *b)
{
    struct qcow2 *q = Q(b);
    uint64_t off = q->snapshots_offset, budget = META_SNAPSHOT_L1_BUDGET;
    int r = 0;
    for (uint32_t s = 0; r == 0 && s < q->nb_snapshots; s++) {
        uint8_t h[40];
        if ((r = file_pread(b->fd, h, sizeof(h), off)) < 0)
            break;
        uint64_t l1_off = be64(*(uint64_t *)(void *)h);
        uint32_t l1_size, extra;
        uint16_t id_len, name_len;
        memcpy(&l1_size, h + 8, 4), memcpy(&id_len, h + 12, 2), memcpy(&name_len, h + 14, 2),
            memcpy(&extra, h + 36, 4);
        l1_size = be32toh(l1_size), id_len = be16toh(id_len), name_len = be16toh(name_len),
        extra = be32toh(extra);
        uint64_t bytes = (uint64_t)l1_size * 8;
        if (l1_size && bytes <= QCOW2_MAX_L1_BYTES && !(l1_off & (q->cluster_size - 1)) &&
            l1_off + bytes <= q->file_end) {
            r = qcow2_meta_add(q, l1_off, bytes, QCOW2_META_FIXED);
            uint64_t *l1 = r == 0 && bytes <= budget ? malloc(bytes) : NULL;
            if (l1 && (r = file_pread(b->fd, l1, bytes, l1_off)) == 0)
                r = add_l2_tables(b, l1, l1_size);
            if (l1)
                budget -= bytes;
            free(l1);
        }
        off += (40 + (uint64_t)extra + id_len + name_len + 7) & ~7ULL;
    }
    if (r == 0 && q->nb_snapshots && off > q->snapshots_offset)
        r = qcow2_meta_add(q, q->snapshots_offset, off - q->snapshots_offset, QCOW2_META_FIXED);
    return r;
}

int qcow2_meta_build(struct blk *b)
{
    struct qcow2 *q = Q(b);
    qcow2_meta_destroy(q);
    if (!(q->meta = calloc(1, sizeof(*q->meta))))
        return -ENOMEM;
    int r = qcow2_meta_add(q, 0, q->cluster_size, QCOW2_META_FIXED);
    if (r == 0)
        r = qcow2_meta_add(q, q->l1_offset, (uint64_t)q->l1_size * 8, QCOW2_META_FIXED);
    if (r == 0)
        r = add_l2_tables(b, q->l1, q->l1_size);
    if (r == 0)
        r = qcow2_meta_add(q, q->rct_offset, (uint64_t)q->rct_clusters * q->cluster_size, QCOW2_META_FIXED);
    for (uint64_t i = 0; r == 0 && i < q->rct_entries; i++) {
        uint64_t rb = be64(q->rct[i]) & L1E_OFFSET_MASK;
        if (rb && !(rb & (q->cluster_size - 1)) && rb < q->file_end)
            r = qcow2_meta_add(q, rb, q->cluster_size, QCOW2_META_REFBLOCK);
    }
    if (r == 0)
        r = add_snapshots(b);
    if (r < 0)
        qcow2_meta_destroy(q);
    return r;
}

void qcow2_meta_destroy(struct qcow2 *q)
{
    if (q->meta) {
        free(q->meta->cl);
        free(q->meta->kind);
        free(q->meta);
        q->meta = NULL;
    }
}

int qcow2_meta_check_write(struct blk *b, uint64_t off, uint64_t len, uint8_t allowed)
{
    struct qcow2 *q = Q(b);
    uint64_t where = 0;
    uint8_t kind = qcow2_meta_find(q, off, len, &where);
    if (!kind || kind == allowed)
        return 0;
    if (allowed)
        return qcow2_mark_corrupt(b, "preventing a write to %s at %#llx: it is %s", qcow2_meta_name(allowed),
                                  (unsigned long long)where, qcow2_meta_name(kind));
    return qcow2_mark_corrupt(b, "preventing a data write to %#llx: the cluster is %s",
                              (unsigned long long)where, qcow2_meta_name(kind));
}
