/* A hostile driver on virtio-net: malformed transmit chains, receive buffers the device must
 * not (or cannot) write, and a flood of garbage frames. After every case the NIC must work
 * again: ARP for the peer and a ping to it must be answered (user mode: the NAT's gateway
 * 10.0.2.2, which always answers), after a reset when the device asked for one.
 *
 * Acceptable outcomes of a bad transmit chain: the device uses it (dropping the frame) or sets
 * DEVICE_NEEDS_RESET; never acceptable: a chain left unused with no reset asked for (the
 * queue is stuck), a write into a transmit buffer, a dead VMM. Unusual but legal layouts
 * (the header split across descriptors, a frame in 1-byte pieces, an indirect table) must be
 * sent: each carries an ARP request whose answer must come back. Receive cases (buffers
 * device-readable, shorter than the header, outside RAM, straddling its end, a loop): the
 * device may drop frames, use a buffer with length 0 or ask for a reset; it must not write a
 * readable buffer or past a buffer's end.
 *
 * Command line: ip=/peer= for a static address (default: DHCP, peer = the router), flood=N
 * garbage frames per flood (default 2000), lenient=1 for QEMU validation runs: skips the
 * 8-byte transmit chain (QEMU 7.2 aborts on an assertion in iov_copy) and accepts receive
 * buffers outside RAM being used with a length (QEMU drops the bytes outside RAM, as a PCI
 * master abort would).
 * NIC options: see vnet_setup() (indirect=1 adds the indirect cases). */
#include "net.h"

#define POISON  0xee
#define CASE_US 500000
#define W       VRING_DESC_F_WRITE
#define N       VRING_DESC_F_NEXT

static struct vnet nic;
static struct netif nif;
static uint8_t *area, *rnd;      /* 64 KiB each: case buffers (poisoned), random bytes */
static struct vring_desc *table; /* an indirect table */
static uint64_t ram_top;
static uint32_t peer;
static unsigned ncase;
static bool lenient;

enum outcome { O_USED, O_RESET, O_STUCK, O_DROPPED };
static const char *const outcome_name[] = { "used", "DEVICE_NEEDS_RESET", "NEVER USED (queue stuck)",
                                            "nothing used (frames dropped)" };

static uint32_t arg_ip(const char *key)
{
    char s[20];
    uint32_t ip = 0;
    const char *v = arg_str(key, s, sizeof(s), NULL);
    if (v && !ip_parse(v, &ip))
        fail("%s=%s is not an IPv4 address", key, v);
    return ip;
}

/* ARP for the peer from an empty cache, then a ping: the NIC works both ways. */
static bool works(void)
{
    uint8_t mac[6], data[32];
    for (unsigned i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(ncase + i);
    nif.narp = 0;
    if (!net_resolve(&nif, peer, mac, 2000000))
        return false;
    for (unsigned tries = 0; tries < 3; tries++)
        if (net_ping(&nif, peer, 0x6576, (uint16_t)(ncase * 4 + tries), data, sizeof(data), 1000000) == 1)
            return true;
    return false;
}

static struct vring_desc mk(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    return (struct vring_desc){ addr, len, flags, next };
}

/* An ARP request for the peer with its 12-byte virtio-net header, at p; returns its length. */
static uint32_t arp_frame(uint8_t *p)
{
    memset(p, 0, VNET_HDR_LEN);
    uint8_t *f = p + VNET_HDR_LEN;
    memcpy(f, eth_broadcast, 6), memcpy(f + 6, nif.mac, 6), put16(f + 12, ETH_P_ARP);
    put16(f + 14, 1), put16(f + 16, ETH_P_IP), f[18] = 6, f[19] = 4, put16(f + 20, 1);
    memcpy(f + 22, nif.mac, 6), put32(f + 28, nif.ip);
    memset(f + 32, 0, 6), put32(f + 38, peer);
    return VNET_HDR_LEN + 42;
}

static void quiesce_tx(void)
{
    vnet_tx_drain(&nic, CASE_US);
    vq_reclaim_all(nic.txq);
    memset(nic.tx_busy, 0, sizeof(nic.tx_busy));
    for (unsigned i = 0; i < VQ_MAX; i++)
        nic.tx_slot_of_head[i] = -1;
}

/* Publishes head 0 of q, notifies and waits for it to be used or for a reset request. */
static enum outcome run(struct vq *q, uint32_t *used_len)
{
    vq_publish(q, 0);
    vq_kick(q);
    uint64_t start = clock_us();
    while (!vq_pending(q)) {
        if (virtio_status(&nic.v) & VIRTIO_S_NEEDS_RESET)
            return O_RESET;
        if (clock_us() - start > CASE_US)
            return O_STUCK;
        pause();
    }
    *used_len = q->used->ring[q->used_idx & (q->size - 1)].len;
    q->used_idx++;
    return virtio_status(&nic.v) & VIRTIO_S_NEEDS_RESET ? O_RESET : O_USED;
}

/* Judges a case and shows the NIC still works (after a reset if one was asked for or the
 * queue is stuck). extra: a further condition and what it says. */
static void judge(const char *what, enum outcome o, uint32_t used_len, bool ok_extra, const char *extra)
{
    ncase++;
    bool ok = o != O_STUCK;
    bool reset = o != O_USED || nic.no_rx_fill;
    int r = 0;
    nic.no_rx_fill = false;
    if (reset)
        r = vnet_restart(&nic);
    else
        quiesce_tx();
    bool alive = r == 0 && works();
    check(ok && ok_extra && alive, "case %u, %s: %s (used len %u)%s%s; then the NIC %s", ncase, what,
          outcome_name[o], used_len, extra ? ", " : "", extra ? extra : "",
          alive ? "works"
          : r   ? "DOES NOT RESTART"
                : "DOES NOT WORK");
}

/* A transmit chain of n descriptors at indexes 0..n-1. */
static void tx_case(const char *what, const struct vring_desc *d, unsigned n)
{
    quiesce_tx();
    for (unsigned i = 0; i < n; i++) {
        volatile struct vring_desc *x = &nic.txq->desc[i];
        x->addr = d[i].addr, x->len = d[i].len, x->flags = d[i].flags, x->next = d[i].next;
    }
    uint32_t len = 0;
    enum outcome o = run(nic.txq, &len);
    judge(what, o, len, true, NULL);
}

static void bad_tx(void)
{
    uint16_t size = nic.txq->size;
    uintptr_t a = (uintptr_t)area;
    uint32_t flen = arp_frame(area);
    struct vring_desc loop[] = { mk(a, 12, N, 1), mk(a + 12, 42, N, 0) };
    tx_case("descriptor loop", loop, 2);
    struct vring_desc beyond[] = { mk(a, 12, N, 1), mk(a + 12, 42, N, size) };
    tx_case("next index beyond the queue size", beyond, 2);

    static const struct {
        const char *name;
        uint64_t addr;
        uint32_t len;
    } bad[] = {
        { "frame at 0xf0000000 (no RAM)", 0xf0000000u, 64 },
        { "frame at 64 GiB (above 4 GiB)", 0x1000000000ull, 64 },
        { "frame at 2^64-4096 (address + length wraps)", 0xfffffffffffff000ull, 8192 },
        { "frame straddling the end of RAM", 0, 256 },
        { "frame length 0xfffffff0", 1, 0xfffffff0u },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t addr = bad[i].addr == 0 ? ram_top - 128 : bad[i].addr == 1 ? a + 12 : bad[i].addr;
        struct vring_desc d[] = { mk(a, 12, N, 1), mk(addr, bad[i].len, 0, 0) };
        tx_case(bad[i].name, d, 2);
        struct vring_desc one[] = { mk(addr, bad[i].len, 0, 0) };
        char w[96];
        snprintf(w, sizeof(w), "header and %s in one descriptor", bad[i].name);
        tx_case(w, one, 1);
    }

    struct vring_desc short_hdr[] = { mk(a, 8, 0, 0) };
    if (lenient) /* QEMU 7.2 aborts: "iov_copy: Assertion `offset == 0' failed" */
        printf("SKIP: 8 bytes: shorter than the virtio-net header (lenient=1: QEMU 7.2 aborts on it)\n");
    else
        tx_case("8 bytes: shorter than the virtio-net header", short_hdr, 1);
    struct vring_desc hdr_only[] = { mk(a, 12, 0, 0) };
    tx_case("header only: an empty frame", hdr_only, 1);
    struct vring_desc runt[] = { mk(a, 12 + 5, 0, 0) };
    tx_case("a 5-byte frame (shorter than an Ethernet header)", runt, 1);
    struct vring_desc zero[] = { mk(a, 12, N, 1), mk(a + 12, 0, N, 2), mk(a + 12, 42, 0, 0) };
    tx_case("a zero-length descriptor inside the chain", zero, 3);

    /* A transmit buffer the device may write: it must not. */
    memset(area + 4096, POISON, 256);
    memcpy(area + 4096, area, flen);
    struct vring_desc wr[] = { mk(a + 4096, 12, N, 1), mk(a + 4096 + 12, 200, W, 0) };
    quiesce_tx();
    for (unsigned i = 0; i < 2; i++)
        nic.txq->desc[i] = wr[i];
    uint32_t len = 0;
    enum outcome o = run(nic.txq, &len);
    bool clean = !memcmp(area + 4096, area, flen);
    for (unsigned i = flen; i < 212; i++)
        clean &= area[4096 + i] == POISON;
    judge("frame buffer device-writable", o, len, clean, clean ? NULL : "WROTE INTO THE TRANSMIT BUFFER");

    /* Headers the driver did not negotiate: checksum offload with offsets past the frame,
     * and GSO. */
    memcpy(area + 8192, area, flen);
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)(void *)(area + 8192);
    h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, h->csum_start = 40, h->csum_offset = 60000;
    struct vring_desc csum[] = { mk(a + 8192, flen, 0, 0) };
    tx_case("NEEDS_CSUM with csum_offset past the frame (CSUM not negotiated)", csum, 1);
    h->flags = 0, h->csum_start = h->csum_offset = 0, h->gso_type = 1, h->gso_size = 8, h->hdr_len = 54;
    tx_case("GSO TCPv4 (not negotiated)", csum, 1);

    /* Oversized frames from readable memory: 9014 and 65 KiB. */
    struct vring_desc big[] = { mk(a, 12, N, 1), mk((uintptr_t)rnd, 9014, 0, 0) };
    tx_case("a 9014-byte frame (MTU 1500)", big, 2);
    struct vring_desc huge[] = { mk(a, 12, N, 1), mk((uintptr_t)rnd, 65536, N, 2),
                                 mk((uintptr_t)rnd, 1000, 0, 0) };
    tx_case("a 66536-byte frame", huge, 3);

    /* Every descriptor in one chain, the last pointing back to the second. */
    quiesce_tx();
    nic.txq->desc[0] = (struct vring_desc){ a, 12, N, 1 };
    for (uint16_t i = 1; i < size; i++)
        nic.txq->desc[i] = (struct vring_desc){ a + 12, 1, N, (uint16_t)(i + 1 < size ? i + 1 : 1) };
    len = 0;
    o = run(nic.txq, &len);
    char w[64];
    snprintf(w, sizeof(w), "chain through all %u descriptors and around again", size);
    judge(w, o, len, true, NULL);
}

/* Legal layouts the device must send: the peer's ARP answer must come. */
static bool arp_answered(void)
{
    uint64_t start = clock_us();
    struct pkt p;
    while (clock_us() - start < 1000000) {
        if (net_poll(&nif, &p, 20000) < 0)
            return false;
        if (p.type == ETH_P_ARP && p.arp_op == 2 && p.arp_sip == peer)
            return true;
    }
    return false;
}

static void legal_case(const char *what, const struct vring_desc *d, unsigned n, bool indirect)
{
    quiesce_tx();
    for (unsigned i = 0; i < n; i++)
        nic.txq->desc[i] = d[i];
    if (indirect)
        nic.txq->desc[0].flags = VRING_DESC_F_INDIRECT;
    uint32_t len = 0;
    enum outcome o = run(nic.txq, &len);
    bool sent = o == O_USED && arp_answered();
    ncase++;
    bool alive = o == O_USED || vnet_restart(&nic) == 0;
    if (o == O_USED)
        quiesce_tx();
    alive = alive && works();
    check(sent && alive, "case %u, %s: %s, %s; then the NIC %s", ncase, what, outcome_name[o],
          sent ? "sent (the peer answered)" : "NOT SENT", alive ? "works" : "DOES NOT WORK");
}

static void legal_tx(void)
{
    uintptr_t a = (uintptr_t)area;
    arp_frame(area);
    struct vring_desc split[] = { mk(a, 5, N, 1), mk(a + 5, 7, N, 2), mk(a + 12, 14, N, 3),
                                  mk(a + 26, 28, 0, 0) };
    legal_case("header split 5 + 7, frame 14 + 28", split, 4, false);
    static struct vring_desc bytes[43];
    bytes[0] = mk(a, 12, N, 1);
    for (unsigned i = 0; i < 42; i++)
        bytes[i + 1] = mk(a + 12 + i, 1, (uint16_t)(i < 41 ? N : 0), (uint16_t)(i + 2));
    legal_case("the frame in 42 one-byte descriptors", bytes, 43, false);
    if (!virtio_has(&nic.v, VIRTIO_F_INDIRECT_DESC)) {
        printf("SKIP: indirect cases: VIRTIO_F_INDIRECT_DESC not negotiated (indirect=1)\n");
        return;
    }
    table[0] = mk(a, 12, N, 1), table[1] = mk(a + 12, 42, 0, 0);
    struct vring_desc ind[] = { mk((uintptr_t)table, 32, 0, 0) };
    legal_case("through an indirect table", ind, 1, true);
    /* and hostile indirect tables */
    struct vring_desc odd[] = { mk((uintptr_t)table, 24, VRING_DESC_F_INDIRECT, 0) };
    tx_case("indirect table length 24 (not a multiple of 16)", odd, 1);
    struct vring_desc out[] = { mk(0xf0000000u, 32, VRING_DESC_F_INDIRECT, 0) };
    tx_case("indirect table at 0xf0000000 (no RAM)", out, 1);
    table[0] = mk(a, 12, N, 1), table[1] = mk(a + 12, 42, N, 0);
    struct vring_desc loop[] = { mk((uintptr_t)table, 32, VRING_DESC_F_INDIRECT, 0) };
    tx_case("loop inside an indirect table", loop, 1);
    table[0] = mk(a, 12, N, 1), table[1] = mk((uintptr_t)table + 64, 16, VRING_DESC_F_INDIRECT, 0);
    tx_case("indirect descriptor inside an indirect table", loop, 1);
}

/* ---- receive side ---- */

/* Restarts with an empty receive queue, posts n one-descriptor chains of len bytes at addr
 * + k * stride (flags), asks the peer for something to receive, waits, and judges. */
static void rx_case(const char *what, uint64_t addr, uint32_t len, uint32_t stride, uint16_t flags,
                    unsigned n, bool loop, bool outside)
{
    nic.no_rx_fill = true;
    if (vnet_restart(&nic)) {
        ncase++;
        fail("case %u, %s: the device does not restart", ncase, what);
        return;
    }
    memset(area, POISON, 16384);
    struct vq *q = nic.rxq;
    for (unsigned k = 0; k < n; k++) {
        q->desc[k] = mk(addr + k * stride, len, flags, (uint16_t)(loop ? (k + 1) % n : 0));
        if (loop)
            q->desc[k].flags |= N;
    }
    for (unsigned k = 0; k < (loop ? 1 : n); k++) {
        q->avail->ring[q->avail_idx & (q->size - 1)] = (uint16_t)k;
        __asm__ volatile("" ::: "memory");
        q->avail->idx = ++q->avail_idx;
    }
    vq_kick(q);
    for (unsigned i = 0; i < 3; i++) /* three ARP requests: three answers to receive */
        net_send_arp(&nif, 1, NULL, NULL, peer);
    uint64_t start = clock_us();
    enum outcome o = O_STUCK;
    uint32_t used = 0, maxlen = 0;
    while (clock_us() - start < CASE_US) {
        if (virtio_status(&nic.v) & VIRTIO_S_NEEDS_RESET) {
            o = O_RESET;
            break;
        }
        while (vq_pending(q)) {
            uint32_t l = q->used->ring[q->used_idx & (q->size - 1)].len;
            maxlen = l > maxlen ? l : maxlen;
            q->used_idx++, used++;
            o = O_USED;
        }
        pause();
    }
    /* What may the device have written? Nothing into readable buffers; at most len bytes of
     * a writable one (whose neighbours in area stay poisoned: stride > len). */
    bool clean = true;
    if ((uintptr_t)addr >= (uintptr_t)area && addr < (uintptr_t)area + 16384) {
        for (unsigned k = 0; k < n; k++) {
            const uint8_t *b = (const uint8_t *)(uintptr_t)(addr + k * stride);
            for (uint32_t i = (flags & W) ? len : 0; i < stride; i++)
                clean &= b[i] == POISON;
        }
    }
    /* A buffer (partly) outside RAM cannot have been written: used with a length is a lie,
     * allowed only with lenient=1 (QEMU drops the bytes that fall outside RAM). */
    bool len_ok = !(flags & W) ? maxlen == 0 : outside ? maxlen == 0 || lenient : maxlen <= len || loop;
    char extra[112];
    snprintf(extra, sizeof(extra), "%u entries used, longest %u%s%s", used, maxlen,
             clean ? "" : "; WROTE WHERE IT MUST NOT", len_ok ? "" : "; A LENGTH IT CANNOT HAVE WRITTEN");
    if (o == O_STUCK) /* nothing used, no reset: the frames were dropped, which is fine here */
        o = O_DROPPED;
    judge(what, o, maxlen, clean && len_ok, extra);
}

static void bad_rx(void)
{
    uintptr_t a = (uintptr_t)area;
    rx_case("rx buffers device-readable", a, 2048, 4096, 0, 4, false, false);
    rx_case("rx buffers of 4 bytes (shorter than the header)", a, 4, 64, W, 16, false, false);
    rx_case("rx buffer at 0xf0000000 (no RAM)", 0xf0000000u, 2048, 4096, W, 4, false, true);
    rx_case("rx buffer straddling the end of RAM", ram_top - 64, 2048, 0, W, 1, false, true);
    rx_case("rx chain looping over 2 descriptors", a, 64, 4096, W, 2, true, false);
}

/* ---- floods ---- */

static uint32_t rng = 0x9e3779b9;
static uint32_t xorshift(void)
{
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return rng;
}

/* count frames from rnd: random lengths 1..1514 (+ header), destination the peer's MAC or
 * broadcast, EtherType IPv4 or ARP half the time, the rest garbage; the header zeroed
 * unless garbage_hdr. */
static void flood(const char *what, uint32_t count, bool garbage_hdr)
{
    const uint8_t *gw = net_arp_lookup(&nif, peer);
    quiesce_tx();
    uint32_t sent = 0, bad = 0;
    uint64_t start = clock_us();
    bool reset = false;
    while (sent < count && clock_us() - start < 20000000) {
        while (sent < count && nic.txq->nfree) {
            uint32_t len = 1 + xorshift() % 1514, off = (xorshift() % (65536 - 2048)) & ~1u;
            uint8_t *f = rnd + off;
            if (!garbage_hdr)
                memset(f, 0, VNET_HDR_LEN);
            uint32_t r = xorshift();
            if (len >= 14) {
                memcpy(f + VNET_HDR_LEN, r & 1 && gw ? gw : eth_broadcast, 6);
                if (r & 2)
                    put16(f + VNET_HDR_LEN + 12, r & 4 ? ETH_P_IP : ETH_P_ARP);
            }
            if (vnet_send_raw(&nic, f, VNET_HDR_LEN + len, false))
                break;
            sent++;
        }
        vnet_kick_tx(&nic);
        for (;;) {
            int id = vq_pop(nic.txq, NULL);
            if (id == -1)
                break;
            bad += id < 0;
        }
        if (virtio_status(&nic.v) & VIRTIO_S_NEEDS_RESET) {
            reset = true;
            break;
        }
        pause();
    }
    bool drained = reset || vnet_tx_drain(&nic, 2000000);
    uint32_t ms = (uint32_t)((clock_us() - start) / 1000);
    ncase++;
    int r = reset ? vnet_restart(&nic) : 0;
    if (!reset)
        quiesce_tx();
    /* the garbage wrote into rnd's headers: restore nothing, rnd is only ever sent */
    bool alive = r == 0 && works();
    check(drained && !bad && alive, "case %u, %s: %u frames in %u ms%s%s%s; then the NIC %s", ncase, what,
          sent, ms, reset ? ", DEVICE_NEEDS_RESET" : "", drained ? "" : ", NOT ALL USED",
          bad ? ", BAD USED IDS" : "", alive ? "works" : "DOES NOT WORK");
}

void test_main(void)
{
    lenient = arg_u64("lenient", 0);
    if (vnet_setup(&nic, 0))
        return;
    area = dma_alloc(65536, 4096), rnd = dma_alloc(65536, 4096), table = dma_alloc(4096, 4096);
    if (!area || !rnd || !table) {
        fail("no memory for the case buffers");
        return;
    }
    for (unsigned i = 0; i < 65536; i++)
        rnd[i] = (uint8_t)xorshift();
    ram_top = ram_end();
    net_init(&nif, &nic, arg_ip("ip"), 0xffffff00u, 0);
    peer = arg_ip("peer");
    if (!nif.ip) {
        struct dhcp_lease l;
        if (dhcp_run(&nif, &l, 15000000)) {
            fail("DHCP: no lease");
            return;
        }
        peer = peer ? peer : nif.gw;
    }
    char a[16], b[16];
    printf("address %s, peer %s, end of RAM %x\n", ip_str(nif.ip, a), ip_str(peer, b), (uint32_t)ram_top);
    check(works(), "the NIC works before the cases (ARP and ping to %s)", b);
    legal_tx();
    bad_tx();
    bad_rx();
    flood("flood of garbage frames", (uint32_t)arg_u64("flood", 2000), false);
    flood("flood of garbage frames with garbage headers", (uint32_t)arg_u64("flood", 2000), true);
    check(works(), "the NIC still works after %u cases", ncase);
}
