/* virtio-net on an isolated L2 segment shared by VMs (kvmbox --net segment=NAME; under QEMU,
 * -netdev dgram between two QEMUs). Two VMs on one segment exchange datagrams both ways and
 * check every byte; a third VM on another segment must see none of their frames.
 *
 * Command line: role=send|recv|quiet, ip=A.B.C.D, peer=A.B.C.D (prefix /24), count=N
 * datagrams (default 200), port=N (default 7000), wait_secs=N (how long to wait for the
 * other VM to appear, default 30).
 *   send:  resolves peer by ARP (retrying while the other VM boots), then sends count UDP
 *          datagrams (sizes 16 .. MTU - 28 by a stride, header "SEGM" + sequence number +
 *          pattern), each answered by recv with every byte XOR 0x5a; checks each answer;
 *          ends with "DONE" datagrams.
 *   recv:  answers ARP, checks every datagram from peer (header, pattern) and answers it,
 *          until DONE; then every sequence number 0..count-1 must have arrived intact.
 *   quiet: prints "READY quiet", sends 3 ARP requests for peer, then counts every frame that
 *          arrives until a 'q' on the console or listen_secs (default 120) pass: frames from
 *          other MACs must be 0, and none of its own frames may come back. */
#include "net.h"

#define MAGIC "SEGM"

static struct vnet nic;
static struct netif nif;
static uint8_t buf[2048], rep[2048];
static uint8_t seen[1024 / 8];

static uint32_t arg_ip(const char *key, const char *dflt)
{
    char s[20];
    uint32_t ip = 0;
    const char *v = arg_str(key, s, sizeof(s), dflt);
    if (!ip_parse(v, &ip))
        fail("%s=%s is not an IPv4 address", key, v);
    return ip;
}

static uint32_t size_of(uint32_t seq, uint32_t max)
{
    return 16 + (seq * 197) % (max - 15); /* 16 .. max */
}

static void fill(uint8_t *p, uint32_t seq, uint32_t len)
{
    memcpy(p, MAGIC, 4), put32(p + 4, seq);
    for (uint32_t i = 8; i < len; i++)
        p[i] = (uint8_t)(i * 11 + seq);
}

static bool valid(const uint8_t *p, uint32_t len, uint32_t *seq, uint32_t max)
{
    if (len < 8 || memcmp(p, MAGIC, 4))
        return false;
    *seq = get32(p + 4);
    if (len != size_of(*seq, max))
        return false;
    for (uint32_t i = 8; i < len; i++)
        if (p[i] != (uint8_t)(i * 11 + *seq))
            return false;
    return true;
}

static bool from_peer(const struct pkt *p, uint32_t peer, uint16_t port)
{
    return p->ip && p->proto == IPPROTO_UDP && p->l4_ok && p->saddr == peer && p->daddr == nif.ip &&
           (p->dport == port || p->sport == port);
}

static void sender(uint32_t peer, uint16_t port, uint32_t count, uint32_t max)
{
    uint8_t mac[6];
    char a[16];
    bool ok = net_resolve(&nif, peer, mac, (uint32_t)arg_u64("wait_secs", 30) * 1000000);
    check(ok, "ARP: peer %s answers on the segment", ip_str(peer, a));
    if (!ok)
        return;
    uint32_t good = 0, wrong = 0, lost = 0;
    for (uint32_t seq = 0; seq < count; seq++) {
        uint32_t len = size_of(seq, max);
        fill(buf, seq, len);
        int got = 0;
        for (unsigned tries = 0; tries < 3 && !got; tries++) {
            net_send_udp(&nif, peer, port, port, buf, len);
            uint64_t start = clock_us();
            struct pkt p;
            while (!got && clock_us() - start < 1000000) {
                if (net_poll(&nif, &p, 20000) < 0)
                    break;
                if (!from_peer(&p, peer, port) || p.data_len < 8 || get32(p.data + 4) != (seq ^ 0x5a5a5a5a))
                    continue;
                got = 1;
                if (p.data_len != len)
                    got = -1;
                for (uint32_t i = 0; got == 1 && i < len; i++) {
                    bool seq_field = i >= 4 && i < 8; /* checked above */
                    if (!seq_field && p.data[i] != (buf[i] ^ 0x5a))
                        got = -1;
                }
            }
        }
        good += got == 1, wrong += got < 0, lost += got == 0;
    }
    check(good == count, "send: %u datagrams (16..%u bytes) answered intact by the peer (%u wrong, %u lost)",
          good, max, wrong, lost);
    for (unsigned i = 0; i < 3; i++)
        net_send_udp(&nif, peer, port, port, "DONE", 4);
    vnet_tx_drain(&nic, 1000000);
}

static void receiver(uint32_t peer, uint16_t port, uint32_t count, uint32_t max)
{
    uint32_t wait = (uint32_t)arg_u64("wait_secs", 30), good = 0, bad = 0, distinct = 0;
    bool done = false, started = false;
    uint64_t start = clock_us(), last = start;
    struct pkt p;
    while (!done) {
        uint64_t now = clock_us();
        if (now - (started ? last : start) > (started ? 5000000ull : wait * 1000000ull))
            break;
        if (net_poll(&nif, &p, 100000) < 0)
            break;
        if (!from_peer(&p, peer, port))
            continue;
        started = true, last = clock_us();
        if (p.data_len == 4 && !memcmp(p.data, "DONE", 4)) {
            done = true;
            continue;
        }
        uint32_t seq;
        if (!valid(p.data, p.data_len, &seq, max)) {
            bad++;
            continue;
        }
        good++;
        if (seq < count && seq < sizeof(seen) * 8 && !(seen[seq / 8] & 1 << seq % 8))
            seen[seq / 8] |= (uint8_t)(1 << seq % 8), distinct++;
        for (uint32_t i = 0; i < p.data_len; i++)
            rep[i] = p.data[i] ^ 0x5a;
        put32(rep + 4, seq ^ 0x5a5a5a5a);
        net_reply_udp(&nif, &p, rep, p.data_len);
    }
    check(done, "recv: the sender ended with DONE");
    check(distinct == count && bad == 0,
          "recv: %u of %u datagrams arrived intact (%u received, %u malformed)", distinct, count, good, bad);
}

static void quiet(uint32_t peer)
{
    uint32_t secs = (uint32_t)arg_u64("listen_secs", 120), total = 0, own = 0, others = 0;
    printf("READY quiet\n");
    for (unsigned i = 0; i < 3; i++)
        net_send_arp(&nif, 1, NULL, NULL, peer);
    uint64_t start = clock_us(), polled = start;
    bool stop = false;
    while (!stop && clock_us() - start < secs * 1000000ull) {
        const uint8_t *f;
        int r = vnet_recv(&nic, &f, 100000);
        if (r < 0 && r != VNET_RX_BAD)
            break;
        if (r >= ETH_HLEN) {
            total++;
            if (!memcmp(f + 6, nif.mac, 6))
                own++;
            else if (others++ < 5)
                printf("frame %u bytes from %02x:%02x:%02x:%02x:%02x:%02x type %x\n", r, f[6], f[7], f[8],
                       f[9], f[10], f[11], get16(f + 12));
        }
        if (clock_us() - polled > 100000) {
            polled = clock_us();
            while (serial_can_read())
                stop |= inb(0x3f8) == 'q';
        }
    }
    printf("quiet: listened %u ms (%s): %u frames, %u from other MACs, %u of its own\n",
           (uint32_t)((clock_us() - start) / 1000), stop ? "stopped by the host" : "time limit", total,
           others, own);
    check(stop, "quiet: the host stopped the listening (it ran while the others exchanged)");
    check(others == 0, "quiet: no frame from the other segment arrived (%u)", others);
    check(own == 0, "quiet: none of its own frames came back (%u)", own);
}

void test_main(void)
{
    if (vnet_setup(&nic, 0))
        return;
    char role[8];
    arg_str("role", role, sizeof(role), "");
    uint32_t ip = arg_ip("ip", "10.0.4.1"), peer = arg_ip("peer", "10.0.4.2");
    uint32_t count = (uint32_t)arg_u64("count", 200), max = nic.mtu - IP_HLEN - UDP_HLEN;
    uint16_t port = (uint16_t)arg_u64("port", 7000);
    if (count > sizeof(seen) * 8)
        count = sizeof(seen) * 8;
    net_init(&nif, &nic, ip, 0xffffff00u, 0);
    if (!strncmp(role, "send", 5))
        sender(peer, port, count, max);
    else if (!strncmp(role, "recv", 5))
        receiver(peer, port, count, max);
    else if (!strncmp(role, "quiet", 6))
        quiet(peer);
    else
        fail("role=%s: expected send, recv or quiet", role);
    check(nic.rx_bad == 0, "the device's rx entries were well formed (%u bad%s%s)", nic.rx_bad,
          nic.bad_why ? ": " : "", nic.bad_why ? nic.bad_why : "");
    printf("frames: rx %u (%u merged) tx %u; ARP answered %u\n", nic.rx_frames, nic.rx_merged, nic.tx_frames,
           nif.arp_answered);
}
