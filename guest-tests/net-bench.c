/* virtio-net throughput seen from the guest, for bench/net-bench.sh. In this order:
 *   tx-1500  UDP frames of 1514 bytes (payload 1472) to peer:port, as fast as the transmit
 *            queue takes them;
 *   tx-64    the same with 60-byte frames (64 on a wire with its FCS; payload 18);
 *   rx-1500, rx-64  frames the host sends us (it starts at BENCH-START and stops at BENCH):
 *            those of the test's size (1514, 60 bytes) counted, not checked; afterwards the
 *            guest drops what is still queued before the next test.
 * The transmitted frame is built once and every descriptor points at it: the guest does no
 * per-frame copying or checksumming, so the numbers are the VMM's. Received frames are only
 * looked at for ARP (answered, so the host can address us).
 * Command line: secs=N per test (default 5); ip=A.B.C.D (default: DHCP; prefix /24),
 * peer=A.B.C.D (default: the router), port=N (the host's sink, default 5009); only=NAME;
 * batch=N (frames per notification, default 64); NIC options: see vnet_setup() (irq=1
 * by default: the guest halts while it waits for frames).
 * Prints "BENCH-START name" before and "BENCH name frames=N bytes=B usec=U" after each test
 * (bytes: Ethernet frames without the virtio header), then the summary. Time is the TSC,
 * calibrated against the ACPI PM timer. */
#include "net.h"

static struct vnet nic;
static struct netif nif;
static uint8_t *frame; /* virtio-net header + the frame to send */
static uint64_t tsc_hz;

static void calibrate(void)
{
    uint32_t p0 = pmtimer_read(), p;
    uint64_t t0 = rdtsc();
    do
        p = pmtimer_read();
    while (((p - p0) & 0xffffff) < 3579545 / 20); /* 50 ms */
    tsc_hz = (rdtsc() - t0) * 3579545 / ((p - p0) & 0xffffff);
}

/* Header + Ethernet + IPv4 + UDP with payload bytes to peer: returns the frame's length
 * (without the header). */
static uint32_t build(const uint8_t *dst_mac, uint32_t peer, uint16_t port, uint32_t payload)
{
    memset(frame, 0, VNET_HDR_LEN);
    uint8_t *f = frame + VNET_HDR_LEN, *ip = f + ETH_HLEN, *u = ip + IP_HLEN;
    memcpy(f, dst_mac, 6), memcpy(f + 6, nif.mac, 6), put16(f + 12, ETH_P_IP);
    memset(ip, 0, IP_HLEN);
    ip[0] = 0x45, put16(ip + 2, (uint16_t)(IP_HLEN + UDP_HLEN + payload)), put16(ip + 6, 0x4000);
    ip[8] = 64, ip[9] = IPPROTO_UDP, put32(ip + 12, nif.ip), put32(ip + 16, peer);
    uint16_t c = csum_fold(csum_add(0, ip, IP_HLEN));
    ip[10] = (uint8_t)c, ip[11] = (uint8_t)(c >> 8);
    put16(u, 5008), put16(u + 2, port), put16(u + 4, (uint16_t)(UDP_HLEN + payload)), put16(u + 6, 0);
    for (uint32_t i = 0; i < payload; i++)
        u[UDP_HLEN + i] = (uint8_t)i;
    uint8_t ph[12];
    put32(ph, nif.ip), put32(ph + 4, peer), ph[8] = 0, ph[9] = IPPROTO_UDP,
                                            put16(ph + 10, (uint16_t)(UDP_HLEN + payload));
    c = csum_fold(csum_add(csum_add(0, ph, 12), u, UDP_HLEN + payload));
    c = c ? c : 0xffff;
    u[6] = (uint8_t)c, u[7] = (uint8_t)(c >> 8);
    return ETH_HLEN + IP_HLEN + UDP_HLEN + payload;
}

static void report(const char *name, uint32_t frames, uint64_t bytes, uint64_t t0)
{
    uint64_t usec = (rdtsc() - t0) * 1000000 / tsc_hz;
    printf("BENCH %s frames=%u bytes=%llu usec=%llu\n", name, frames, (unsigned long long)bytes,
           (unsigned long long)usec);
}

static void tx(const char *name, uint32_t len, uint64_t secs, unsigned batch)
{
    uint32_t done = 0, bad = 0;
    printf("BENCH-START %s\n", name);
    uint64_t t0 = rdtsc(), deadline = t0 + secs * tsc_hz;
    while (rdtsc() < deadline) {
        for (unsigned k = 0; k < batch && nic.txq->nfree; k++)
            vnet_send_raw(&nic, frame, VNET_HDR_LEN + len, false);
        vnet_kick_tx(&nic);
        for (int id; (id = vq_pop(nic.txq, NULL)) != -1;)
            id >= 0 ? done++ : bad++;
        if (!nic.txq->nfree)
            pause();
    }
    uint64_t drain = rdtsc() + tsc_hz;
    while (nic.txq->nfree != nic.txq->size && rdtsc() < drain)
        for (int id; (id = vq_pop(nic.txq, NULL)) != -1;)
            id >= 0 ? done++ : bad++;
    report(name, done, (uint64_t)done * len, t0);
    check(done && !bad && nic.txq->nfree == nic.txq->size, "%s: %u frames of %u bytes sent (%u bad used ids)",
          name, done, len, bad);
}

/* Counts the frames of len bytes that arrive in secs (others: only ARP is looked at), then
 * drops what still comes until 300 ms pass without a frame (at most 3 s), so that frames
 * queued in the host for this test are not counted by the next. */
static void rx(const char *name, uint32_t len, uint64_t secs)
{
    uint32_t frames = 0, other = 0;
    uint64_t bytes = 0;
    struct pkt p;
    printf("BENCH-START %s\n", name);
    uint64_t t0 = rdtsc(), deadline = t0 + secs * tsc_hz;
    while (rdtsc() < deadline) {
        const uint8_t *f;
        int r = vnet_recv(&nic, &f, 100000);
        if (r < 0 && r != VNET_RX_BAD)
            break;
        if (r <= 0)
            continue;
        if ((uint32_t)r == len)
            frames++, bytes += (uint32_t)r;
        else
            other++;
        if (r >= ETH_HLEN && f[12] == 0x08 && f[13] == 0x06) /* ARP */
            net_input(&nif, f, (uint32_t)r, &p);
    }
    report(name, frames, bytes, t0);
    uint32_t late = 0;
    const uint8_t *f;
    for (uint64_t end = rdtsc() + 3 * tsc_hz; rdtsc() < end && vnet_recv(&nic, &f, 300000) > 0;)
        late++;
    check(frames > 0, "%s: %u frames of %u bytes received (%u others during the test, %u after it)", name,
          frames, len, other, late);
}

static bool want(const char *only, const char *name)
{
    return !only[0] || !strncmp(only, name, 16);
}

void test_main(void)
{
    uint64_t secs = arg_u64("secs", 5);
    unsigned batch = (unsigned)arg_u64("batch", 64);
    char only[16], s[20];
    arg_str("only", only, sizeof(only), "");
    calibrate();
    if (vnet_setup(&nic, 0))
        return;
    frame = dma_alloc(2048, 64);
    nic.rx_refill = nic.rxq->size / 4;
    uint32_t ip = 0, peer = 0;
    if (arg_str("ip", s, sizeof(s), NULL) && !ip_parse(s, &ip))
        fail("ip=%s is not an IPv4 address", s);
    if (arg_str("peer", s, sizeof(s), NULL) && !ip_parse(s, &peer))
        fail("peer=%s is not an IPv4 address", s);
    net_init(&nif, &nic, ip, 0xffffff00u, 0);
    if (!ip) {
        struct dhcp_lease l;
        if (dhcp_run(&nif, &l, 15000000)) {
            fail("DHCP: no lease");
            return;
        }
    }
    if (!peer)
        peer = nif.gw;
    uint8_t mac[6];
    if (!frame || !net_resolve(&nif, peer, mac, 5000000)) {
        fail("the peer does not answer ARP (or no memory)");
        return;
    }
    uint16_t port = (uint16_t)arg_u64("port", 5009);
    char a[16], b[16];
    printf("BENCH-INFO %s -> %s:%u, queues rx %u tx %u, %s, batch %u, TSC %u kHz\n", ip_str(nif.ip, a),
           ip_str(peer, b), port, nic.rxq->size, nic.txq->size, nic.v.irq ? "rx by interrupts" : "rx polled",
           batch, (uint32_t)(tsc_hz / 1000));
    if (want(only, "tx-1500"))
        tx("tx-1500", build(mac, peer, port, 1472), secs, batch);
    if (want(only, "tx-64"))
        tx("tx-64", build(mac, peer, port, 18), secs, batch);
    if (want(only, "rx-1500"))
        rx("rx-1500", 1514, secs);
    if (want(only, "rx-64"))
        rx("rx-64", 60, secs);
    check(nic.rx_bad == 0, "the device's rx entries were well formed (%u bad%s%s)", nic.rx_bad,
          nic.bad_why ? ": " : "", nic.bad_why ? nic.bad_why : "");
}
