#include "virtio/queue.h"

#include <string.h>

#include "vmm/guest_mem.h"

static const char *const errs[VQ_E_MAX] = {
    [VQ_OK] = "no error",
    [VQ_E_SIZE] = "queue size is 0, not a power of two, or too large",
    [VQ_E_RING_ADDR] = "a ring lies outside guest RAM",
    [VQ_E_RING_ALIGN] = "a ring is misaligned",
    [VQ_E_AVAIL_IDX] = "the avail index ran more than a queue ahead",
    [VQ_E_HEAD] = "a chain head is outside the queue",
    [VQ_E_NEXT] = "a next index is outside the queue",
    [VQ_E_TOO_LONG] = "a chain is longer than the queue (loop?)",
    [VQ_E_BUF_ADDR] = "a buffer lies outside guest RAM",
    [VQ_E_INDIRECT_NESTED] = "an indirect table holds an indirect descriptor",
    [VQ_E_INDIRECT_LEN] = "an indirect table has a bad length",
    [VQ_E_INDIRECT_ADDR] = "an indirect table lies outside guest RAM",
    [VQ_E_INDIRECT_NEXT] = "a descriptor is both INDIRECT and NEXT",
    [VQ_E_ORDER] = "a device-readable buffer follows a device-writable one",
};

const char *virtq_strerror(int err)
{
    if (err < 0)
        err = -err;
    return err < VQ_E_MAX ? errs[err] : "unknown virtqueue error";
}

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* One copy out of guest memory: the guest may rewrite the descriptor meanwhile, so fields are
 * never read twice. Little-endian host assumed (x86-64 only). */
static void read_desc(const uint8_t *table, unsigned i, struct desc *d)
{
    memcpy(d, table + 16 * (size_t)i, sizeof(*d));
}

static uint16_t load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static void store16(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

void virtq_reset(struct virtq *q)
{
    memset(q, 0, sizeof(*q));
}

int virtq_setup(struct virtq *q, const struct guest_mem *gm, uint16_t size, uint16_t max, uint64_t desc,
                uint64_t avail, uint64_t used, bool event_idx)
{
    virtq_reset(q);
    if (size == 0 || (size & (size - 1)) || size > max || size > VIRTQ_MAX_SIZE)
        return -VQ_E_SIZE;
    if ((desc & 15) || (avail & 1) || (used & 3))
        return -VQ_E_RING_ALIGN;
    uint8_t *d = gm_ptr(gm, desc, 16ULL * size);
    uint8_t *a = gm_ptr(gm, avail, 6 + 2ULL * size);
    uint8_t *u = gm_ptr(gm, used, 6 + 8ULL * size);
    if (!d || !a || !u)
        return -VQ_E_RING_ADDR;
    q->gm = gm, q->size = size, q->desc = d, q->avail = a, q->used = u;
    q->event_idx = event_idx;
    q->last_avail = 0;
    q->used_idx = 0; /* the device's used index starts at 0 (2.7.8); the driver zeroed the ring */
    q->live = true;
    return 0;
}

/* Adds one buffer to the chain. */
static int add_seg(struct virtq *q, struct virtq_chain *c, const struct desc *d)
{
    bool write = d->flags & VIRTQ_DESC_F_WRITE;
    if (!write && c->nseg > c->nread)
        return -VQ_E_ORDER;
    if (d->len == 0)
        return 0; /* nothing to transfer; allowed, and skipped */
    if (c->nseg == VIRTQ_CHAIN_MAX)
        return -VQ_E_TOO_LONG;
    uint8_t *p = gm_ptr(q->gm, d->addr, d->len);
    if (!p)
        return -VQ_E_BUF_ADDR;
    c->seg[c->nseg++] = (struct virtq_seg){ .ptr = p, .len = d->len, .write = write };
    if (!write)
        c->nread = c->nseg;
    return 0;
}

/* Walks an indirect table; BUDGET counts every descriptor of the chain. */
static int walk_indirect(struct virtq *q, struct virtq_chain *c, const struct desc *ind, unsigned *budget)
{
    if (ind->len == 0 || ind->len % 16)
        return -VQ_E_INDIRECT_LEN;
    unsigned n = ind->len / 16;
    if (n > q->size || n > *budget)
        return -VQ_E_INDIRECT_LEN;
    const uint8_t *table = gm_ptr(q->gm, ind->addr, ind->len);
    if (!table)
        return -VQ_E_INDIRECT_ADDR;
    unsigned i = 0;
    for (;;) {
        if ((*budget)-- == 0)
            return -VQ_E_TOO_LONG;
        struct desc d;
        read_desc(table, i, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT)
            return -VQ_E_INDIRECT_NESTED;
        int r = add_seg(q, c, &d);
        if (r < 0)
            return r;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= n)
            return -VQ_E_NEXT;
        i = d.next;
    }
}

static int walk(struct virtq *q, struct virtq_chain *c, uint16_t head)
{
    unsigned budget = q->size, i = head;
    for (;;) {
        if (budget-- == 0)
            return -VQ_E_TOO_LONG;
        struct desc d;
        read_desc(q->desc, i, &d);
        int r;
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (d.flags & VIRTQ_DESC_F_NEXT)
                return -VQ_E_INDIRECT_NEXT;
            budget++; /* the indirect descriptor itself carries no buffer */
            return walk_indirect(q, c, &d, &budget);
        }
        if ((r = add_seg(q, c, &d)) < 0)
            return r;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= q->size)
            return -VQ_E_NEXT;
        i = d.next;
    }
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
    c->head = 0xffff, c->nseg = 0, c->nread = 0;
    if (!q->live)
        return 0;
    uint16_t avail_idx = load16(q->avail + 2);
    uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
    if (pending == 0)
        return 0;
    if (pending > q->size)
        return -VQ_E_AVAIL_IDX;
    uint16_t head = load16(q->avail + 4 + 2 * (q->last_avail & (q->size - 1)));
    q->last_avail++;
    if (head >= q->size)
        return -VQ_E_HEAD;
    c->head = head;
    int r = walk(q, c, head);
    return r < 0 ? r : 1;
}

void virtq_unpop(struct virtq *q, uint16_t n)
{
    q->last_avail = (uint16_t)(q->last_avail - n);
}

bool virtq_has_avail(struct virtq *q)
{
    return q->live && load16(q->avail + 2) != q->last_avail;
}

bool virtq_enable_notify(struct virtq *q)
{
    if (!q->live)
        return false;
    if (q->event_idx)
        store16(q->used + 4 + 8 * (size_t)q->size, q->last_avail);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the store above before the load below */
    return load16(q->avail + 2) != q->last_avail;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
    if (!q->live)
        return;
    uint8_t *e = q->used + 4 + 8 * (size_t)(q->used_idx & (q->size - 1));
    uint32_t id = head;
    memcpy(e, &id, 4);
    memcpy(e + 4, &len, 4);
    q->used_idx++;
    store16(q->used + 2, q->used_idx); /* release: the element is visible first */
}

bool virtq_should_notify(struct virtq *q)
{
    if (!q->live)
        return false;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* used->idx store before reading the driver's flags */
    if (!q->event_idx)
        return !(load16(q->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
    uint16_t old = q->signalled, now = q->used_idx;
    uint16_t event = load16(q->avail + 4 + 2 * (size_t)q->size);
    bool valid = q->signalled_valid;
    q->signalled = now, q->signalled_valid = true;
    return !valid || (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}
