/* qcow2 internal snapshots: the snapshot table, and create/list/apply/delete with qcow2's
 * refcount rule (every L1 table that reaches a cluster, through any L2 table, counts once).
 * Each operation raises refcounts before it publishes anything and lowers them only after,
 * so a crash leaves at worst leaked clusters. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/qcow2.h"

#define SN_HEADER 40
#define SN_EXTRA  16 /* vm_state_size_large, disk_size */

struct sn {
    uint64_t l1_offset, vm_clock, disk_size;
    uint32_t l1_size, date_sec, date_nsec, vm_state;
    char id[128], name[256];
};

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}
static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}
static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}
static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)(v >> 16)), wr16(p + 2, (uint16_t)v);
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32)), wr32(p + 4, (uint32_t)v);
}

static int load_table(struct blk *b, struct sn **out, uint32_t *n)
{
    struct qcow2 *q = Q(b);
    *n = q->nb_snapshots;
    *out = calloc(*n + 1, sizeof(struct sn));
    if (!*out)
        return -ENOMEM;
    uint64_t off = q->snapshots_offset;
    for (uint32_t i = 0; i < *n; i++) {
        uint8_t h[SN_HEADER];
        int r = file_pread(b->fd, h, sizeof(h), off);
        if (r < 0)
            return r;
        struct sn *s = &(*out)[i];
        s->l1_offset = rd64(h), s->l1_size = rd32(h + 8);
        uint16_t id_len = rd16(h + 12), name_len = rd16(h + 14);
        s->date_sec = rd32(h + 16), s->date_nsec = rd32(h + 20), s->vm_clock = rd64(h + 24);
        s->vm_state = rd32(h + 32);
        uint32_t extra = rd32(h + 36);
        if (extra > 1024 || id_len >= sizeof(s->id) || name_len >= sizeof(s->name) ||
            (uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
            return blk_set_err(b, -EINVAL, "%s: snapshot table entry %u is invalid", b->path, i);
        uint8_t ex[1024];
        if ((r = file_pread(b->fd, ex, extra, off + SN_HEADER)) < 0 ||
            (r = file_pread(b->fd, s->id, id_len, off + SN_HEADER + extra)) < 0 ||
            (r = file_pread(b->fd, s->name, name_len, off + SN_HEADER + extra + id_len)) < 0)
            return r;
        s->disk_size = extra >= 16 ? rd64(ex + 8) : b->size;
        off += (SN_HEADER + extra + id_len + name_len + 7) & ~7ULL;
    }
    return 0;
}

/* Writes TABLE (N entries) to new clusters and points the header at it; frees the old one. */
static int store_table(struct blk *b, const struct sn *t, uint32_t n)
{
    struct qcow2 *q = Q(b);
    size_t size = 0;
    for (uint32_t i = 0; i < n; i++)
        size += (SN_HEADER + SN_EXTRA + strlen(t[i].id) + strlen(t[i].name) + 7) & ~7UL;
    uint8_t *buf = calloc(1, size ? size : 1);
    if (!buf)
        return -ENOMEM;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = buf + off;
        size_t il = strlen(t[i].id), nl = strlen(t[i].name);
        wr64(p, t[i].l1_offset), wr32(p + 8, t[i].l1_size), wr16(p + 12, (uint16_t)il),
            wr16(p + 14, (uint16_t)nl);
        wr32(p + 16, t[i].date_sec), wr32(p + 20, t[i].date_nsec), wr64(p + 24, t[i].vm_clock);
        wr32(p + 32, t[i].vm_state), wr32(p + 36, SN_EXTRA);
        wr64(p + 40, t[i].vm_state), wr64(p + 48, t[i].disk_size);
        memcpy(p + SN_HEADER + SN_EXTRA, t[i].id, il);
        memcpy(p + SN_HEADER + SN_EXTRA + il, t[i].name, nl);
        off += (SN_HEADER + SN_EXTRA + il + nl + 7) & ~7UL;
    }
    uint64_t cs = q->cluster_size, clusters = (size + cs - 1) / cs, table = 0;
    int r = 0;
    if (n && (r = qcow2_alloc_clusters(b, clusters, &table)) == 0 &&
        (r = qcow2_meta_add(q, table, clusters * cs, QCOW2_META_FIXED)) == 0 &&
        (r = file_pwrite(b->fd, buf, size, table)) == 0 && fdatasync(b->fd) < 0)
        r = -errno;
    free(buf);
    if (r < 0)
        return blk_set_err(b, r, "writing the snapshot table of %s", b->path);
    uint8_t hdr[12];
    wr32(hdr, n), wr64(hdr + 4, table);
    if ((r = qcow2_write_header_field(b, 60, hdr, 12)) < 0 || fdatasync(b->fd) < 0)
        return r ? r : -errno;
    uint64_t old = q->snapshots_offset, old_n = q->nb_snapshots, old_size = 0;
    /* The old table's size: walk it before forgetting it. */
    for (uint64_t i = 0, o = old; i < old_n; i++) {
        uint8_t h[SN_HEADER];
        if (file_pread(b->fd, h, sizeof(h), o) < 0)
            break;
        uint64_t len = (SN_HEADER + rd32(h + 36) + rd16(h + 12) + rd16(h + 14) + 7) & ~7ULL;
        o += len, old_size += len;
    }
    q->nb_snapshots = n, q->snapshots_offset = table;
    for (uint64_t c = 0; old_n && c < (old_size + cs - 1) / cs; c++)
        qcow2_update_refcount(b, old + c * cs, -1);
    return 0;
}

/* Adds DELTA to the refcount of every L2 table and data cluster L1 reaches. */
static int walk(struct blk *b, const uint64_t *l1, uint32_t l1_size, int64_t delta)
{
    struct qcow2 *q = Q(b);
    uint64_t *l2 = malloc(q->cluster_size);
    if (!l2)
        return -ENOMEM;
    int r = 0;
    for (uint32_t i = 0; r == 0 && i < l1_size; i++) {
        uint64_t t = be64(l1[i]) & L1E_OFFSET_MASK;
        if (!t)
            continue;
        if ((r = qcow2_update_refcount(b, t, delta)) < 0 ||
            (r = file_pread(b->fd, l2, q->cluster_size, t)) < 0)
            break;
        for (uint32_t j = 0; r == 0 && j < q->l2_entries; j++) {
            uint64_t e = be64(l2[j]);
            if (e & QCOW_OFLAG_COMPRESSED) {
                unsigned x = 62 - (q->cluster_bits - 8);
                uint64_t host = e & ((1ULL << x) - 1), sectors = ((e >> x) & ((1ULL << (62 - x)) - 1)) + 1;
                uint64_t cs = q->cluster_size, first = host & ~(cs - 1),
                         last = (host + sectors * 512 - (host & 511) - 1) & ~(cs - 1);
                for (uint64_t c = first; r == 0 && c <= last; c += cs)
                    r = qcow2_update_refcount(b, c, delta);
            } else if (e & L2E_OFFSET_MASK) {
                r = qcow2_update_refcount(b, e & L2E_OFFSET_MASK, delta);
            }
        }
    }
    free(l2);
    return r;
}

/* Drops one L1 table's references (its L2 tables and data) and frees the table at OFF. */
static int drop_tree(struct blk *b, const uint64_t *l1, uint32_t l1_size, uint64_t off)
{
    uint64_t cs = Q(b)->cluster_size;
    int r = walk(b, l1, l1_size, -1);
    for (uint64_t c = 0; r == 0 && c < ((uint64_t)l1_size * 8 + cs - 1) / cs; c++)
        r = qcow2_update_refcount(b, off + c * cs, -1);
    return r;
}

/* Sets COPIED on the active tree's entries exactly where the refcount is 1. */
static int fix_copied(struct blk *b)
{
    struct blk_check_result res = { 0 };
    return qcow2_sync_copied(b, true, &res);
}

static int find(const struct sn *t, uint32_t n, const char *key)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(t[i].id, key))
            return (int)i;
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, key))
            return (int)i;
    return -1;
}

/* Loads the table and finds KEY (an ID first, then a name): its index or a negative errno. */
static int lookup(struct blk *b, const char *key, struct sn **t, uint32_t *n)
{
    int r = load_table(b, t, n);
    if (r < 0)
        return r;
    int i = find(*t, *n, key);
    return i >= 0 ? i : blk_set_err(b, -ENOENT, "no snapshot '%s' in %s", key, b->path);
}

int qcow2_snapshot_list(struct blk *b, struct blk_snapshot *out, int max)
{
    struct sn *t;
    uint32_t n;
    pthread_mutex_lock(&b->lock);
    int r = load_table(b, &t, &n);
    for (uint32_t i = 0; r == 0 && i < n && (int)i < max; i++) {
        struct blk_snapshot *s = &out[i];
        snprintf(s->id, sizeof(s->id), "%s", t[i].id);
        snprintf(s->name, sizeof(s->name), "%s", t[i].name);
        s->vm_state_size = t[i].vm_state, s->date_sec = t[i].date_sec, s->date_nsec = t[i].date_nsec;
        s->vm_clock_nsec = t[i].vm_clock, s->disk_size = t[i].disk_size;
    }
    pthread_mutex_unlock(&b->lock);
    free(t);
    return r < 0 ? r : (int)n;
}

int qcow2_snapshot_create(struct blk *b, const char *name)
{
    struct qcow2 *q = Q(b);
    struct sn *t;
    uint32_t n;
    pthread_mutex_lock(&b->lock);
    qcow2_wait_inplace(b); /* clusters are about to be shared or freed */
    int r = load_table(b, &t, &n);
    if (r == 0 && find(t, n, name) >= 0)
        r = blk_set_err(b, -EEXIST, "a snapshot named '%s' exists already", name);
    uint64_t cs = q->cluster_size, l1_clusters = ((uint64_t)q->l1_size * 8 + cs - 1) / cs, l1 = 0;
    if (r == 0 && strlen(name) >= sizeof(t->name))
        r = blk_set_err(b, -EINVAL, "snapshot name too long");
    if (r == 0 && n >= QCOW2_MAX_SNAPSHOTS) /* one more and open would refuse the image */
        r = blk_set_err(b, -EFBIG, "%s has %u snapshots, the most an image may have", b->path, n);
    if (r == 0)
        r = walk(b, q->l1, q->l1_size, 1); /* the snapshot's references */
    if (r == 0)
        r = fix_copied(b); /* shared now: no COPIED */
    if (r == 0 && l1_clusters && (r = qcow2_alloc_clusters(b, l1_clusters, &l1)) == 0 &&
        (r = qcow2_meta_add(q, l1, l1_clusters * cs, QCOW2_META_FIXED)) == 0)
        r = file_pwrite(b->fd, q->l1, (size_t)q->l1_size * 8, l1);
    if (r == 0) {
        struct sn *s = &t[n];
        unsigned max_id = 0;
        for (uint32_t i = 0; i < n; i++)
            if ((unsigned)atoi(t[i].id) > max_id)
                max_id = (unsigned)atoi(t[i].id);
        snprintf(s->id, sizeof(s->id), "%u", max_id + 1);
        snprintf(s->name, sizeof(s->name), "%s", name);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->date_sec = (uint32_t)ts.tv_sec, s->date_nsec = (uint32_t)ts.tv_nsec;
        s->l1_offset = l1, s->l1_size = q->l1_size, s->disk_size = b->size;
        r = store_table(b, t, n + 1);
    }
    pthread_mutex_unlock(&b->lock);
    free(t);
    return r;
}

/* The snapshot table's size on disk (0 when it cannot be read: load_table said so). */
static uint64_t table_bytes(struct blk *b)
{
    struct qcow2 *q = Q(b);
    uint64_t size = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        uint8_t h[SN_HEADER];
        if (file_pread(b->fd, h, sizeof(h), q->snapshots_offset + size) < 0)
            return 0;
        size += (SN_HEADER + (uint64_t)rd32(h + 36) + rd16(h + 12) + rd16(h + 14) + 7) & ~7ULL;
    }
    return size;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* Snapshot I of T (N entries) checked whole before anything is changed: its size as open
 * would accept it, its L1 table aligned, inside the file, big enough for its size and clear
 * of all other metadata, and every L2 table it names aligned, inside the file and nothing
 * but an L2 table. 0, or -EINVAL with the reason. L1 holds the table (I's l1_size entries). */
static int validate(struct blk *b, const struct sn *t, uint32_t n, uint32_t i, const uint64_t *l1)
{
    struct qcow2 *q = Q(b);
    const struct sn *s = &t[i];
    uint64_t cs = q->cluster_size, bytes = (uint64_t)s->l1_size * 8, per_l1 = cs * q->l2_entries;
    char why[BLK_ERRMSG_MAX - 128];
    if (qcow2_size_ok(s->disk_size, q->cluster_bits, why, sizeof(why)) < 0)
        return blk_set_err(b, -EINVAL, "snapshot '%s' of %s is damaged: %s", s->name, b->path, why);
    if (s->l1_size < s->disk_size / per_l1 + (s->disk_size % per_l1 != 0))
        return blk_set_err(b, -EINVAL,
                           "snapshot '%s' of %s is damaged: its L1 table (%u entries) is too small for "
                           "its size",
                           s->name, b->path, s->l1_size);
    if (!bytes)
        return 0;
    const char *what = NULL;
    if ((s->l1_offset & (cs - 1)) || s->l1_offset + bytes > q->file_end ||
        s->l1_offset + bytes < s->l1_offset)
        what = "is misaligned or past the end of the file";
    else if (overlaps(s->l1_offset, bytes, 0, cs))
        what = "overlaps the header";
    else if (overlaps(s->l1_offset, bytes, q->l1_offset, (uint64_t)q->l1_size * 8))
        what = "overlaps the active L1 table";
    else if (overlaps(s->l1_offset, bytes, q->rct_offset, (uint64_t)q->rct_clusters * cs))
        what = "overlaps the refcount table";
    else if (overlaps(s->l1_offset, bytes, q->snapshots_offset, table_bytes(b)))
        what = "overlaps the snapshot table";
    for (uint32_t k = 0; !what && k < n; k++)
        if (k != i && overlaps(s->l1_offset, bytes, t[k].l1_offset, (uint64_t)t[k].l1_size * 8))
            what = "overlaps another snapshot's L1 table";
    uint64_t where;
    uint8_t kind = what ? 0 : qcow2_meta_find(q, s->l1_offset, bytes, &where);
    if (kind && kind != QCOW2_META_FIXED)
        what = "overlaps an L2 table or a refcount block";
    if (what)
        return blk_set_err(b, -EINVAL, "snapshot '%s' of %s is damaged: its L1 table at %#llx %s", s->name,
                           b->path, (unsigned long long)s->l1_offset, what);
    for (uint32_t k = 0; k < s->l1_size; k++) {
        uint64_t e = be64(l1[k]), l2 = e & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if ((e & ~(L1E_OFFSET_MASK | QCOW_OFLAG_COPIED)) || (l2 & (cs - 1)) || l2 >= q->file_end)
            what = "is invalid";
        else if ((kind = qcow2_meta_find(q, l2, cs, &where)) && kind != QCOW2_META_L2)
            what = "is not an L2 table but other metadata";
        if (what)
            return blk_set_err(b, -EINVAL, "snapshot '%s' of %s is damaged: L1 entry %u (L2 table %#llx) %s",
                               s->name, b->path, k, (unsigned long long)l2, what);
    }
    return 0;
}

int qcow2_snapshot_apply(struct blk *b, const char *key)
{
    struct qcow2 *q = Q(b);
    struct sn *t;
    uint32_t n;
    pthread_mutex_lock(&b->lock);
    qcow2_wait_inplace(b); /* clusters are about to be shared or freed */
    int i = lookup(b, key, &t, &n), r = i < 0 ? i : 0;
    uint64_t *sl1 = NULL, cs = q->cluster_size;
    uint32_t size = r == 0 ? (t[i].l1_size > q->l1_size ? t[i].l1_size : q->l1_size) : 0;
    if (r == 0 && !(sl1 = calloc(size ? size : 1, 8)))
        r = -ENOMEM;
    if (r == 0)
        r = file_pread(b->fd, sl1, (size_t)t[i].l1_size * 8, t[i].l1_offset);
    if (r == 0)
        r = validate(b, t, n, (uint32_t)i, sl1); /* before anything changes */
    if (r == 0)
        r = walk(b, sl1, t[i].l1_size, 1); /* the active table's new references */
    uint64_t nl1 = 0, clusters = ((uint64_t)size * 8 + cs - 1) / cs;
    if (r == 0 && clusters && (r = qcow2_alloc_clusters(b, clusters, &nl1)) == 0 &&
        (r = qcow2_meta_add(q, nl1, clusters * cs, QCOW2_META_FIXED)) == 0) {
        for (uint32_t k = 0; k < size; k++)
            sl1[k] = htobe64(be64(sl1[k]) & ~QCOW_OFLAG_COPIED);
        r = file_pwrite(b->fd, sl1, (size_t)size * 8, nl1);
    }
    if (r == 0 && fdatasync(b->fd) < 0)
        r = -errno;
    if (r == 0) {
        uint8_t hdr[12];
        wr32(hdr, size), wr64(hdr + 4, nl1);
        uint8_t sz[8];
        wr64(sz, t[i].disk_size);
        r = qcow2_write_header_field(b, 36, hdr, 12);
        if (r == 0)
            r = qcow2_write_header_field(b, 24, sz, 8);
        if (r == 0 && fdatasync(b->fd) < 0)
            r = -errno;
    }
    if (r == 0) {
        uint64_t *old = q->l1, old_off = q->l1_offset;
        uint32_t old_size = q->l1_size;
        q->l1 = sl1, q->l1_offset = nl1, q->l1_size = size, b->size = t[i].disk_size;
        sl1 = NULL;
        for (unsigned c = 0; c < CACHE_ENTRIES; c++)
            q->l2c.offset[c] = 0;
        r = drop_tree(b, old, old_size, old_off); /* what only the old state used is freed */
        free(old);
        if (r == 0)
            r = fix_copied(b);
    }
    pthread_mutex_unlock(&b->lock);
    free(sl1);
    free(t);
    return r;
}

int qcow2_snapshot_delete(struct blk *b, const char *key)
{
    struct sn *t;
    uint32_t n;
    pthread_mutex_lock(&b->lock);
    qcow2_wait_inplace(b); /* clusters are about to be shared or freed */
    int i = lookup(b, key, &t, &n), r = i < 0 ? i : 0;
    struct sn gone = r == 0 ? t[i] : (struct sn){ 0 };
    uint64_t *l1 = NULL;
    if (r == 0 && !(l1 = calloc(gone.l1_size ? gone.l1_size : 1, 8)))
        r = -ENOMEM;
    if (r == 0)
        r = file_pread(b->fd, l1, (size_t)gone.l1_size * 8, gone.l1_offset);
    if (r == 0)
        r = validate(b, t, n, (uint32_t)i, l1); /* freeing what a damaged table names would free anything */
    if (r == 0) {
        memmove(&t[i], &t[i + 1], (n - (uint32_t)i - 1) * sizeof(*t));
        r = store_table(b, t, n - 1);
    }
    if (r == 0)
        r = drop_tree(b, l1, gone.l1_size, gone.l1_offset);
    if (r == 0)
        r = fix_copied(b);
    pthread_mutex_unlock(&b->lock);
    free(l1);
    free(t);
    return r;
}
