/* libFuzzer target for what a guest controls in virtio: the rings and descriptors in guest
 * memory (virtq_setup, virtq_pop over direct and indirect chains, notification fields) and
 * what devices make of the chains (virtio-blk request parsing, virtio-net frame checks and
 * receive placement). The input becomes the first 64 KiB of guest RAM, rings included; the
 * first bytes choose the queue size and features. Sanitizers catch any access outside RAM.
 * `make fuzz-virtio FUZZ_SECONDS=60`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/blk_req.h"
#include "virtio/net_frame.h"
#include "virtio/queue.h"
#include "vmm/guest_mem.h"

#define RAM (64u << 10)

static volatile uint8_t sink;

static void touch(const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < iov[i].iov_len; j += 512)
            sink ^= ((const uint8_t *)iov[i].iov_base)[j] ^
                    ((const uint8_t *)iov[i].iov_base)[iov[i].iov_len - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *ram;
    if (!ram && !(ram = aligned_alloc(4096, RAM)))
        return 0;
    if (size < 8)
        return 0;
    uint16_t qsz = (uint16_t)(1u << (data[0] % 9)); /* 1 .. 256 */
    bool event_idx = data[1] & 1, keep_hdr = data[1] & 2;
    size_t frame_len = (size_t)(data[2] | data[3] << 8);
    memset(ram, 0, RAM);
    memcpy(ram, data + 8, size - 8 < RAM ? size - 8 : RAM);
    struct guest_mem gm;
    gm_layout(&gm, ram, RAM);
    struct virtq q;
    uint64_t desc = 0, avail = 0x1000 + (data[4] & 0xf) * 2, used = 0x2000 + (data[5] & 0xf) * 4;
    if (virtq_setup(&q, &gm, qsz, 256, desc, avail, used, event_idx) < 0)
        return 0;
    static struct virtq_chain c;
    static struct blk_req req;
    struct iovec iov[VIRTQ_CHAIN_MAX];
    const struct blk_req_limits lim = { .capacity = 1 << 20,
                                        .discard = true,
                                        .write_zeroes = true,
                                        .max_discard_sectors = 1 << 16,
                                        .max_write_zeroes_sectors = 1 << 16,
                                        .readonly = data[6] & 1 };
    uint8_t hdr[NET_HDR_LEN] = { 0 };
    const uint8_t *frame = data + 8;
    if (frame_len > size - 8)
        frame_len = size - 8;
    for (int round = 0; round < 300; round++) {
        int r = virtq_pop(&q, &c);
        if (r == 0 && virtq_enable_notify(&q))
            r = virtq_pop(&q, &c);
        if (r <= 0)
            break;
        int n = net_tx_frame(&c, keep_hdr, iov);
        if (n > 0)
            touch(iov, n);
        if (blk_req_parse(&c, &lim, &req) == 0) {
            touch(req.iov, req.niov);
            sink ^= *req.status;
        }
        if (c.nread == 0) {
            size_t w = net_rx_copy(&c, 0, hdr, frame, frame_len);
            if (w >= NET_HDR_LEN)
                net_rx_set_num_buffers(&c, 1);
        }
        virtq_push(&q, c.head, 0);
        sink ^= (uint8_t)virtq_should_notify(&q);
    }
    return 0;
}
