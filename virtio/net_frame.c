#include "virtio/net_frame.h"

#include <string.h>

int net_tx_frame(const struct virtq_chain *c, bool keep_hdr, struct iovec *iov)
{
    if (c->nread != c->nseg)
        return -NF_E_WRITABLE;
    size_t total = 0;
    for (unsigned i = 0; i < c->nseg; i++)
        total += c->seg[i].len;
    if (total < NET_HDR_LEN + 14)
        return -NF_E_SHORT;
    if (total > NET_HDR_LEN + NET_MAX_FRAME)
        return -NF_E_LONG;
    int n = 0;
    size_t skip = keep_hdr ? 0 : NET_HDR_LEN;
    for (unsigned i = 0; i < c->nseg; i++) {
        size_t len = c->seg[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        iov[n++] = (struct iovec){ c->seg[i].ptr + skip, len - skip };
        skip = 0;
    }
    return n;
}

/* Copies LEN bytes of SRC into the writable segments of C from byte POS on. */
static size_t fill(const struct virtq_chain *c, size_t pos, const uint8_t *src, size_t len)
{
    size_t done = 0;
    for (unsigned i = c->nread; i < c->nseg && done < len; i++) {
        if (pos >= c->seg[i].len) {
            pos -= c->seg[i].len;
            continue;
        }
        size_t k = c->seg[i].len - pos < len - done ? c->seg[i].len - pos : len - done;
        memcpy(c->seg[i].ptr + pos, src + done, k);
        done += k, pos = 0;
    }
    return done;
}

size_t net_rx_copy(const struct virtq_chain *c, size_t placed, const uint8_t hdr[NET_HDR_LEN],
                   const uint8_t *data, size_t data_len)
{
    size_t cap = 0, total = NET_HDR_LEN + data_len;
    for (unsigned i = c->nread; i < c->nseg; i++)
        cap += c->seg[i].len;
    if (placed >= total)
        return 0;
    size_t k = total - placed < cap ? total - placed : cap, w = 0;
    if (placed < NET_HDR_LEN) /* the header first, then the frame */
        w = fill(c, 0, hdr + placed, NET_HDR_LEN - placed < k ? NET_HDR_LEN - placed : k);
    if (k > w)
        w += fill(c, w, data + (placed + w - NET_HDR_LEN), k - w);
    return w;
}

void net_rx_set_num_buffers(const struct virtq_chain *c, uint16_t n)
{
    uint8_t b[2] = { (uint8_t)n, (uint8_t)(n >> 8) };
    fill(c, 10, b, 2); /* the header may straddle segments: fill() follows them */
}
