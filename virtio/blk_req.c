#include "virtio/blk_req.h"

#include <stddef.h>
#include <string.h>

#define SECTOR 512ULL

static const char *const errs[BR_E_MAX] = {
    [BR_OK] = "no error",
    [BR_E_HDR_SHORT] = "request header shorter than 16 bytes",
    [BR_E_NO_STATUS] = "no device-writable status byte",
    [BR_E_UNSUPP] = "request type not supported",
    [BR_E_DIR] = "data buffers in the wrong direction",
    [BR_E_ALIGN] = "data length not a multiple of 512",
    [BR_E_RANGE] = "request beyond the end of the disk",
    [BR_E_READONLY] = "write to a read-only disk",
    [BR_E_SEGMENTS] = "bad discard/write-zeroes segments",
    [BR_E_FLAGS] = "bad discard/write-zeroes flags",
};

const char *blk_req_strerror(int err)
{
    if (err < 0)
        err = -err;
    return err < BR_E_MAX ? errs[err] : "unknown request error";
}

int blk_req_status(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case BR_OK: return VIRTIO_BLK_S_OK;
    case BR_E_HDR_SHORT:
    case BR_E_NO_STATUS: return -1;
    case BR_E_UNSUPP: return VIRTIO_BLK_S_UNSUPP;
    default: return VIRTIO_BLK_S_IOERR;
    }
}

/* Gathers LEN bytes at byte POS of the segments [first, end) into DST; returns bytes copied. */
static size_t gather(const struct virtq_chain *c, unsigned first, unsigned end, size_t pos, void *dst,
                     size_t len)
{
    size_t done = 0;
    for (unsigned i = first; i < end && done < len; i++) {
        size_t sl = c->seg[i].len;
        if (pos >= sl) {
            pos -= sl;
            continue;
        }
        size_t n = sl - pos < len - done ? sl - pos : len - done;
        memcpy((uint8_t *)dst + done, c->seg[i].ptr + pos, n);
        done += n, pos = 0;
    }
    return done;
}

/* iovecs over bytes [skip, skip+len) of segments [first, end). Returns the count. */
static int slice(const struct virtq_chain *c, unsigned first, unsigned end, uint64_t skip, uint64_t len,
                 struct iovec *iov)
{
    int n = 0;
    for (unsigned i = first; i < end && len; i++) {
        uint64_t sl = c->seg[i].len;
        if (skip >= sl) {
            skip -= sl;
            continue;
        }
        uint64_t take = sl - skip < len ? sl - skip : len;
        iov[n++] = (struct iovec){ .iov_base = c->seg[i].ptr + skip, .iov_len = take };
        len -= take, skip = 0;
    }
    return n;
}

static uint64_t total(const struct virtq_chain *c, unsigned first, unsigned end)
{
    uint64_t t = 0;
    for (unsigned i = first; i < end; i++)
        t += c->seg[i].len;
    return t;
}

static bool in_range(uint64_t sector, uint64_t nsectors, uint64_t capacity)
{
    return sector <= capacity && nsectors <= capacity - sector;
}

/* DISCARD and WRITE_ZEROES carry one 16-byte segment {sector, num_sectors, flags}. */
static int parse_ranges(const struct virtq_chain *c, uint64_t out_len, const struct blk_req_limits *lim,
                        struct blk_req *r)
{
    bool wz = r->type == VIRTIO_BLK_T_WRITE_ZEROES;
    if (lim->readonly)
        return -BR_E_READONLY;
    if (out_len != 16 || r->in_len != 0)
        return -BR_E_SEGMENTS; /* max_discard_seg = max_write_zeroes_seg = 1 */
    uint8_t s[16];
    gather(c, 0, c->nread, 16, s, 16);
    uint64_t sector;
    uint32_t n, flags;
    memcpy(&sector, s, 8), memcpy(&n, s + 8, 4), memcpy(&flags, s + 12, 4);
    if (flags & ~(uint32_t)VIRTIO_BLK_WZ_UNMAP || (!wz && flags))
        return -BR_E_FLAGS;
    uint32_t max = wz ? lim->max_write_zeroes_sectors : lim->max_discard_sectors;
    if (n == 0 || n > max)
        return -BR_E_SEGMENTS;
    if (!in_range(sector, n, lim->capacity))
        return -BR_E_RANGE;
    r->sector = sector;
    r->offset = sector * SECTOR, r->len = (uint64_t)n * SECTOR;
    r->unmap = flags & VIRTIO_BLK_WZ_UNMAP;
    return 0;
}

int blk_req_parse(const struct virtq_chain *c, const struct blk_req_limits *lim, struct blk_req *r)
{
    memset(r, 0, offsetof(struct blk_req, iov));
    uint64_t rd = total(c, 0, c->nread), wr = total(c, c->nread, c->nseg);
    if (wr == 0)
        return -BR_E_NO_STATUS;
    /* The status byte: the last byte of the last writable segment. */
    const struct virtq_seg *last = &c->seg[c->nseg - 1];
    r->status = last->ptr + last->len - 1;
    r->in_len = (uint32_t)(wr - 1);
    uint8_t hdr[16];
    if (rd < 16 || gather(c, 0, c->nread, 0, hdr, 16) != 16)
        return -BR_E_HDR_SHORT;
    memcpy(&r->type, hdr, 4);
    memcpy(&r->sector, hdr + 8, 8);
    uint64_t out_len = rd - 16;
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool in = r->type == VIRTIO_BLK_T_IN;
        uint64_t len = in ? r->in_len : out_len;
        if (in ? out_len != 0 : r->in_len != 0)
            return -BR_E_DIR;
        if (len % SECTOR)
            return -BR_E_ALIGN;
        if (!in && lim->readonly)
            return -BR_E_READONLY;
        if (!in_range(r->sector, len / SECTOR, lim->capacity))
            return -BR_E_RANGE;
        r->offset = r->sector * SECTOR, r->len = len;
        r->niov = in ? slice(c, c->nread, c->nseg, 0, len, r->iov) : slice(c, 0, c->nread, 16, len, r->iov);
        return 0;
    }
    case VIRTIO_BLK_T_FLUSH: return out_len || r->in_len ? -BR_E_DIR : 0;
    case VIRTIO_BLK_T_GET_ID:
        if (out_len || r->in_len == 0)
            return -BR_E_DIR;
        r->len = r->in_len < VIRTIO_BLK_ID_BYTES ? r->in_len : VIRTIO_BLK_ID_BYTES;
        r->niov = slice(c, c->nread, c->nseg, 0, r->len, r->iov);
        return 0;
    case VIRTIO_BLK_T_DISCARD:
        if (!lim->discard)
            return -BR_E_UNSUPP;
        return parse_ranges(c, out_len, lim, r);
    case VIRTIO_BLK_T_WRITE_ZEROES:
        if (!lim->write_zeroes)
            return -BR_E_UNSUPP;
        return parse_ranges(c, out_len, lim, r);
    default: return -BR_E_UNSUPP;
    }
}
