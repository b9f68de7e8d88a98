/* Unit tests for the virtqueue chain walker and the virtio-blk request parser: one test per
 * way a hostile driver can get a ring or a request wrong. The rings are built in a fake
 * guest RAM of 1 MiB. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_main.h"
#include "virtio/blk_req.h"
#include "virtio/net_frame.h"
#include "virtio/queue.h"
#include "vmm/guest_mem.h"

#define RAM   (1u << 20)
#define QSZ   16
#define DESC  0x1000
#define AVAIL 0x2000
#define USED  0x3000
#define IND   0x4000
#define DATA  0x10000

static struct guest_mem gm;
static uint8_t *ram;
static struct virtq q;

static void setup(void)
{
    ram = aligned_alloc(4096, RAM);
    memset(ram, 0, RAM);
    gm_layout(&gm, ram, RAM);
    ck_assert_int_eq(virtq_setup(&q, &gm, QSZ, 256, DESC, AVAIL, USED, false), 0);
}

static void teardown(void)
{
    free(ram);
}

static void desc_at(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = ram + table + 16 * i;
    memcpy(d, &addr, 8), memcpy(d + 8, &len, 4), memcpy(d + 12, &flags, 2), memcpy(d + 14, &next, 2);
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    desc_at(DESC, i, addr, len, flags, next);
}

static void put16(uint64_t gpa, uint16_t v)
{
    memcpy(ram + gpa, &v, 2);
}

static uint16_t get16(uint64_t gpa)
{
    uint16_t v;
    memcpy(&v, ram + gpa, 2);
    return v;
}

/* Publishes HEAD as the next available chain. */
static void offer(uint16_t head)
{
    uint16_t idx = get16(AVAIL + 2);
    put16(AVAIL + 4 + 2 * (idx % QSZ), head);
    put16(AVAIL + 2, (uint16_t)(idx + 1));
}

static int pop(struct virtq_chain *c)
{
    return virtq_pop(&q, c);
}

/* ---- queue setup ---- */

START_TEST(setup_checks)
{
    struct virtq v;
    ck_assert_int_eq(virtq_setup(&v, &gm, 0, 256, DESC, AVAIL, USED, false), -VQ_E_SIZE);
    ck_assert_int_eq(virtq_setup(&v, &gm, 12, 256, DESC, AVAIL, USED, false), -VQ_E_SIZE);
    ck_assert_int_eq(virtq_setup(&v, &gm, 512, 256, DESC, AVAIL, USED, false), -VQ_E_SIZE);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC + 8, AVAIL, USED, false), -VQ_E_RING_ALIGN);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC, AVAIL + 1, USED, false), -VQ_E_RING_ALIGN);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC, AVAIL, USED + 2, false), -VQ_E_RING_ALIGN);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, RAM, AVAIL, USED, false), -VQ_E_RING_ADDR);
    /* used ring straddling the end of RAM */
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC, AVAIL, RAM - 64, false), -VQ_E_RING_ADDR);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC, AVAIL, 0xfffffffffffff000ULL, false),
                     -VQ_E_RING_ADDR);
    ck_assert(!v.live);
    ck_assert_int_eq(virtq_setup(&v, &gm, 16, 256, DESC, AVAIL, USED, true), 0);
    ck_assert(v.live);
}
END_TEST

/* ---- chains ---- */

START_TEST(pop_empty_and_valid)
{
    struct virtq_chain c;
    ck_assert_int_eq(pop(&c), 0);
    set_desc(0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, DATA + 512, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    set_desc(2, DATA + 1024, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), 1);
    ck_assert_uint_eq(c.head, 0);
    ck_assert_uint_eq(c.nseg, 3);
    ck_assert_uint_eq(c.nread, 1);
    ck_assert_ptr_eq(c.seg[1].ptr, ram + DATA + 512);
    ck_assert(c.seg[2].write);
    ck_assert_int_eq(pop(&c), 0);
    virtq_push(&q, 0, 513);
    ck_assert_uint_eq(get16(USED + 2), 1);
    uint32_t id, len;
    memcpy(&id, ram + USED + 4, 4), memcpy(&len, ram + USED + 8, 4);
    ck_assert_uint_eq(id, 0);
    ck_assert_uint_eq(len, 513);
}
END_TEST

START_TEST(err_avail_idx)
{
    struct virtq_chain c;
    put16(AVAIL + 2, QSZ + 1);
    ck_assert_int_eq(pop(&c), -VQ_E_AVAIL_IDX);
}
END_TEST

START_TEST(err_head)
{
    struct virtq_chain c;
    offer(QSZ);
    ck_assert_int_eq(pop(&c), -VQ_E_HEAD);
}
END_TEST

START_TEST(err_next)
{
    struct virtq_chain c;
    set_desc(0, DATA, 16, VIRTQ_DESC_F_NEXT, QSZ);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_NEXT);
}
END_TEST

START_TEST(err_loop)
{
    struct virtq_chain c;
    set_desc(0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, DATA, 16, VIRTQ_DESC_F_NEXT, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_TOO_LONG);
}
END_TEST

START_TEST(err_self_loop)
{
    struct virtq_chain c;
    set_desc(3, DATA, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
    offer(3);
    ck_assert_int_eq(pop(&c), -VQ_E_TOO_LONG);
}
END_TEST

START_TEST(err_buf_outside_ram)
{
    struct virtq_chain c;
    set_desc(0, RAM + 4096, 16, 0, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_BUF_ADDR);
    set_desc(1, RAM - 8, 16, 0, 0); /* straddles the end */
    offer(1);
    ck_assert_int_eq(pop(&c), -VQ_E_BUF_ADDR);
    set_desc(2, DATA, 0xfffffff0u, 0, 0); /* huge length */
    offer(2);
    ck_assert_int_eq(pop(&c), -VQ_E_BUF_ADDR);
    set_desc(3, 0xfffffffffffffff0ULL, 0x20, 0, 0); /* wraps around */
    offer(3);
    ck_assert_int_eq(pop(&c), -VQ_E_BUF_ADDR);
}
END_TEST

START_TEST(err_order)
{
    struct virtq_chain c;
    set_desc(0, DATA, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    set_desc(1, DATA + 16, 16, 0, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_ORDER);
}
END_TEST

START_TEST(indirect_valid)
{
    struct virtq_chain c;
    desc_at(IND, 0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
    desc_at(IND, 1, DATA + 512, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    desc_at(IND, 2, DATA + 8192, 1, VIRTQ_DESC_F_WRITE, 0);
    set_desc(5, IND, 48, VIRTQ_DESC_F_INDIRECT, 0);
    offer(5);
    ck_assert_int_eq(pop(&c), 1);
    ck_assert_uint_eq(c.head, 5);
    ck_assert_uint_eq(c.nseg, 3);
    ck_assert_uint_eq(c.seg[1].len, 4096);
}
END_TEST

START_TEST(err_indirect_nested)
{
    struct virtq_chain c;
    desc_at(IND, 0, IND + 256, 32, VIRTQ_DESC_F_INDIRECT, 0);
    set_desc(0, IND, 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_NESTED);
}
END_TEST

START_TEST(err_indirect_len)
{
    struct virtq_chain c;
    set_desc(0, IND, 0, VIRTQ_DESC_F_INDIRECT, 0);
    set_desc(1, IND, 24, VIRTQ_DESC_F_INDIRECT, 0);
    set_desc(2, IND, 16 * (QSZ + 1), VIRTQ_DESC_F_INDIRECT, 0);
    offer(0), offer(1), offer(2);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_LEN);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_LEN);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_LEN);
}
END_TEST

START_TEST(err_indirect_addr)
{
    struct virtq_chain c;
    set_desc(0, RAM - 16, 64, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_ADDR);
}
END_TEST

START_TEST(err_indirect_next)
{
    struct virtq_chain c;
    set_desc(0, IND, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_INDIRECT_NEXT);
    /* a NEXT inside the table that leaves the table */
    desc_at(IND, 0, DATA, 16, VIRTQ_DESC_F_NEXT, 2);
    desc_at(IND, 1, DATA, 16, 0, 0);
    set_desc(1, IND, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(1);
    ck_assert_int_eq(pop(&c), -VQ_E_NEXT);
}
END_TEST

START_TEST(err_indirect_loop)
{
    struct virtq_chain c;
    desc_at(IND, 0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
    desc_at(IND, 1, DATA, 16, VIRTQ_DESC_F_NEXT, 0);
    set_desc(0, IND, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    ck_assert_int_eq(pop(&c), -VQ_E_TOO_LONG);
}
END_TEST

START_TEST(notify_suppression)
{
    /* Without EVENT_IDX: NO_INTERRUPT in avail->flags. */
    put16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    virtq_push(&q, 0, 1);
    ck_assert(!virtq_should_notify(&q));
    put16(AVAIL, 0);
    virtq_push(&q, 0, 1);
    ck_assert(virtq_should_notify(&q));
    /* With EVENT_IDX: interrupt only when used_event is crossed. */
    struct virtq e;
    memset(ram + DESC, 0, 0x3000);
    ck_assert_int_eq(virtq_setup(&e, &gm, QSZ, 256, DESC, AVAIL, USED, true), 0);
    put16(AVAIL + 4 + 2 * QSZ, 2); /* used_event: interrupt when entry 2 is used */
    virtq_push(&e, 0, 1);
    ck_assert(virtq_should_notify(&e)); /* the first one always */
    virtq_push(&e, 0, 1);
    ck_assert(!virtq_should_notify(&e)); /* used idx 2: event 2 not yet passed */
    virtq_push(&e, 0, 1);
    ck_assert(virtq_should_notify(&e)); /* used idx 3 passes event 2 */
    /* avail_event is published when the device waits for more */
    struct virtq_chain c;
    ck_assert_int_eq(virtq_pop(&e, &c), 0);
    put16(USED + 4 + 8 * QSZ, 0xbeef);
    ck_assert(!virtq_enable_notify(&e));
    ck_assert_uint_eq(get16(USED + 4 + 8 * QSZ), 0);
    set_desc(0, DATA, 16, 0, 0);
    offer(0);
    ck_assert(virtq_enable_notify(&e)); /* a buffer arrived: pop again */
    ck_assert_int_eq(virtq_pop(&e, &c), 1);
}
END_TEST

/* ---- virtio-blk requests ---- */

static const struct blk_req_limits lim = {
    .capacity = 2048,
    .discard = true,
    .write_zeroes = true,
    .max_discard_sectors = 1024,
    .max_write_zeroes_sectors = 1024,
};

struct reqbuf {
    uint8_t hdr[16];
    uint8_t data[8192];
    uint8_t status;
};

static struct reqbuf rb;
static struct virtq_chain ch;

static void hdr(uint32_t type, uint64_t sector)
{
    memset(&rb, 0, sizeof(rb));
    memcpy(rb.hdr, &type, 4);
    memcpy(rb.hdr + 8, &sector, 8);
    ch.nseg = ch.nread = 0;
}

static void seg(void *p, uint32_t len, bool write)
{
    ch.seg[ch.nseg++] = (struct virtq_seg){ .ptr = p, .len = len, .write = write };
    if (!write)
        ch.nread = ch.nseg;
}

static int parse(struct blk_req *r, const struct blk_req_limits *l)
{
    return blk_req_parse(&ch, l, r);
}

START_TEST(req_in_out_flush_id)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 8);
    seg(rb.hdr, 16, false), seg(rb.data, 4096, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    ck_assert_uint_eq(r.offset, 4096);
    ck_assert_uint_eq(r.len, 4096);
    ck_assert_int_eq(r.niov, 1);
    ck_assert_ptr_eq(r.status, &rb.status);
    /* data and status in one writable descriptor; header split in two */
    hdr(VIRTIO_BLK_T_IN, 0);
    seg(rb.hdr, 8, false), seg(rb.hdr + 8, 8, false), seg(rb.data, 513, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    ck_assert_uint_eq(r.len, 512);
    ck_assert_ptr_eq(r.status, rb.data + 512);
    /* header and data in one readable descriptor (hdr and data are adjacent in rb) */
    hdr(VIRTIO_BLK_T_OUT, 2047);
    seg(rb.hdr, 16 + 512, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    ck_assert_uint_eq(r.offset, 2047 * 512ULL);
    ck_assert_ptr_eq(r.iov[0].iov_base, rb.data);
    hdr(VIRTIO_BLK_T_FLUSH, 0);
    seg(rb.hdr, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    hdr(VIRTIO_BLK_T_GET_ID, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 20, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    ck_assert_uint_eq(r.len, 20);
}
END_TEST

START_TEST(req_err_hdr_short)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 0);
    seg(rb.hdr, 15, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_HDR_SHORT);
    ck_assert_int_eq(blk_req_status(-BR_E_HDR_SHORT), -1);
}
END_TEST

START_TEST(req_err_no_status)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_OUT, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 512, false);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_NO_STATUS);
    ck_assert_int_eq(blk_req_status(-BR_E_NO_STATUS), -1);
}
END_TEST

START_TEST(req_err_header_writable)
{
    /* The header in a device-writable buffer: no readable header at all. */
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 0);
    seg(rb.hdr, 16, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_HDR_SHORT);
}
END_TEST

START_TEST(req_err_unsupp)
{
    struct blk_req r;
    hdr(99, 0);
    seg(rb.hdr, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_UNSUPP);
    ck_assert_int_eq(blk_req_status(-BR_E_UNSUPP), VIRTIO_BLK_S_UNSUPP);
    struct blk_req_limits nod = lim;
    nod.discard = false;
    hdr(VIRTIO_BLK_T_DISCARD, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &nod), -BR_E_UNSUPP);
}
END_TEST

START_TEST(req_err_dir)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 0); /* a read whose data buffer is device-readable */
    seg(rb.hdr, 16, false), seg(rb.data, 512, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_DIR);
    ck_assert_int_eq(blk_req_status(-BR_E_DIR), VIRTIO_BLK_S_IOERR);
    hdr(VIRTIO_BLK_T_OUT, 0); /* a write whose data buffer is device-writable */
    seg(rb.hdr, 16, false), seg(rb.data, 512, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_DIR);
    hdr(VIRTIO_BLK_T_FLUSH, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 512, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_DIR);
}
END_TEST

START_TEST(req_err_align)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 100, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_ALIGN);
}
END_TEST

START_TEST(req_err_range)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_IN, 2047); /* the last sector plus one more */
    seg(rb.hdr, 16, false), seg(rb.data, 1024, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_RANGE);
    hdr(VIRTIO_BLK_T_IN, 0xffffffffffffffffULL); /* overflowing sector */
    seg(rb.hdr, 16, false), seg(rb.data, 512, true), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_RANGE);
}
END_TEST

START_TEST(req_err_readonly)
{
    struct blk_req r;
    struct blk_req_limits ro = lim;
    ro.readonly = true;
    hdr(VIRTIO_BLK_T_OUT, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 512, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &ro), -BR_E_READONLY);
    ck_assert_int_eq(blk_req_status(-BR_E_READONLY), VIRTIO_BLK_S_IOERR);
    hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &ro), -BR_E_READONLY);
}
END_TEST

static void range_seg(uint64_t sector, uint32_t n, uint32_t flags)
{
    memcpy(rb.data, &sector, 8), memcpy(rb.data + 8, &n, 4), memcpy(rb.data + 12, &flags, 4);
}

START_TEST(req_discard_wz)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    range_seg(100, 28, VIRTIO_BLK_WZ_UNMAP);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), 0);
    ck_assert_uint_eq(r.offset, 100 * 512);
    ck_assert_uint_eq(r.len, 28 * 512);
    ck_assert(r.unmap);
}
END_TEST

START_TEST(req_err_segments)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_DISCARD, 0); /* two segments: more than max_discard_seg */
    range_seg(0, 8, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 32, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_SEGMENTS);
    hdr(VIRTIO_BLK_T_DISCARD, 0); /* more sectors than max_discard_sectors */
    range_seg(0, 1025, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_SEGMENTS);
    hdr(VIRTIO_BLK_T_DISCARD, 0); /* beyond the disk */
    range_seg(2040, 16, 0);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_RANGE);
}
END_TEST

START_TEST(req_err_flags)
{
    struct blk_req r;
    hdr(VIRTIO_BLK_T_DISCARD, 0); /* unmap is for write-zeroes only */
    range_seg(0, 8, VIRTIO_BLK_WZ_UNMAP);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_FLAGS);
    hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0); /* reserved bits */
    range_seg(0, 8, 0x80);
    seg(rb.hdr, 16, false), seg(rb.data, 16, false), seg(&rb.status, 1, true);
    ck_assert_int_eq(parse(&r, &lim), -BR_E_FLAGS);
}
END_TEST

/* ---- virtio-net frames ---- */

START_TEST(net_tx_frames)
{
    struct iovec iov[VIRTQ_CHAIN_MAX];
    static uint8_t f[2][2048];
    ch.nseg = ch.nread = 0;
    seg(f[0], 12, false), seg(f[1], 60, false); /* header and frame in two buffers */
    ck_assert_int_eq(net_tx_frame(&ch, false, iov), 1);
    ck_assert_ptr_eq(iov[0].iov_base, f[1]);
    ck_assert_uint_eq(iov[0].iov_len, 60);
    ck_assert_int_eq(net_tx_frame(&ch, true, iov), 2); /* tap: the header goes along */
    ch.nseg = ch.nread = 0;
    seg(f[0], 74, false); /* both in one buffer */
    ck_assert_int_eq(net_tx_frame(&ch, false, iov), 1);
    ck_assert_ptr_eq(iov[0].iov_base, f[0] + 12);
    ck_assert_uint_eq(iov[0].iov_len, 62);
    ch.nseg = ch.nread = 0;
    seg(f[0], 12, false), seg(f[1], 60, true); /* a device-writable transmit buffer */
    ck_assert_int_eq(net_tx_frame(&ch, false, iov), -NF_E_WRITABLE);
    ch.nseg = ch.nread = 0;
    seg(f[0], 20, false); /* no room for an Ethernet header */
    ck_assert_int_eq(net_tx_frame(&ch, false, iov), -NF_E_SHORT);
    ch.nseg = ch.nread = 0;
    for (int i = 0; i < 40; i++) /* 80 KiB: more than a 64 KiB frame */
        seg(f[i & 1], 2048, false);
    ck_assert_int_eq(net_tx_frame(&ch, false, iov), -NF_E_LONG);
}
END_TEST

START_TEST(net_rx_placement)
{
    static uint8_t a[8], b[100], c[1000];
    uint8_t hdr[NET_HDR_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0 }, frame[600];
    for (size_t i = 0; i < sizeof(frame); i++)
        frame[i] = (uint8_t)i;
    /* One chain whose first buffer is smaller than the header: it straddles two buffers. */
    ch.nseg = ch.nread = 0;
    seg(a, 8, true), seg(b, 100, true), seg(c, 1000, true);
    ck_assert_uint_eq(net_rx_copy(&ch, 0, hdr, frame, sizeof(frame)), NET_HDR_LEN + sizeof(frame));
    ck_assert(!memcmp(a, hdr, 8) && !memcmp(b, hdr + 8, 4) && !memcmp(b + 4, frame, 96));
    ck_assert(!memcmp(c, frame + 96, sizeof(frame) - 96));
    net_rx_set_num_buffers(&ch, 0x0102);
    ck_assert_uint_eq(b[2], 0x02);
    ck_assert_uint_eq(b[3], 0x01);
    /* Mergeable buffers: the stream continues in the next chain where the first stopped. */
    ch.nseg = ch.nread = 0;
    seg(b, 100, true);
    ck_assert_uint_eq(net_rx_copy(&ch, 0, hdr, frame, sizeof(frame)), 100);
    ch.nseg = ch.nread = 0;
    seg(c, 1000, true);
    ck_assert_uint_eq(net_rx_copy(&ch, 100, hdr, frame, sizeof(frame)), NET_HDR_LEN + sizeof(frame) - 100);
    ck_assert(!memcmp(c, frame + 88, sizeof(frame) - 88));
}
END_TEST

START_TEST(error_strings)
{
    for (int e = 0; e < VQ_E_MAX; e++)
        ck_assert_ptr_nonnull(virtq_strerror(-e));
    for (int e = 0; e < BR_E_MAX; e++)
        ck_assert_ptr_nonnull(blk_req_strerror(-e));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("virtio");
    TCase *tq = tcase_create("virtqueue");
    tcase_add_checked_fixture(tq, setup, teardown);
    tcase_add_test(tq, setup_checks);
    tcase_add_test(tq, pop_empty_and_valid);
    tcase_add_test(tq, err_avail_idx);
    tcase_add_test(tq, err_head);
    tcase_add_test(tq, err_next);
    tcase_add_test(tq, err_loop);
    tcase_add_test(tq, err_self_loop);
    tcase_add_test(tq, err_buf_outside_ram);
    tcase_add_test(tq, err_order);
    tcase_add_test(tq, indirect_valid);
    tcase_add_test(tq, err_indirect_nested);
    tcase_add_test(tq, err_indirect_len);
    tcase_add_test(tq, err_indirect_addr);
    tcase_add_test(tq, err_indirect_next);
    tcase_add_test(tq, err_indirect_loop);
    tcase_add_test(tq, notify_suppression);
    suite_add_tcase(s, tq);
    TCase *tb = tcase_create("blk-request");
    tcase_add_test(tb, req_in_out_flush_id);
    tcase_add_test(tb, req_err_hdr_short);
    tcase_add_test(tb, req_err_no_status);
    tcase_add_test(tb, req_err_header_writable);
    tcase_add_test(tb, req_err_unsupp);
    tcase_add_test(tb, req_err_dir);
    tcase_add_test(tb, req_err_align);
    tcase_add_test(tb, req_err_range);
    tcase_add_test(tb, req_err_readonly);
    tcase_add_test(tb, req_discard_wz);
    tcase_add_test(tb, req_err_segments);
    tcase_add_test(tb, req_err_flags);
    tcase_add_test(tb, error_strings);
    tcase_add_test(tb, net_tx_frames);
    tcase_add_test(tb, net_rx_placement);
    suite_add_tcase(s, tb);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
