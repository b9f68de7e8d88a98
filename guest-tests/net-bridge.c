/* virtio-net on a bridge (or tap) in a network namespace: static addresses, frames of every
 * size from the smallest to the MTU both ways, with their payloads checked.
 *
 * Command line: ip=A.B.C.D (ours, default 10.0.3.2), peer=A.B.C.D (the namespace's bridge
 * address, default 10.0.3.1), prefix=N (default 24);
 *   step=N       ICMP echo payloads 0..15, then every N bytes up to MTU - 28, plus the largest
 *                two (default 1: every size): the host kernel answers, the reply must carry
 *                the same payload, so each frame size from 42 to MTU + 14 goes both ways;
 *   udp_port=N   also UDP datagrams to peer:N, an echo server in the namespace that answers
 *                "echo:" + payload (sizes 0 .. MTU - 33 in steps of udp_step, default 4 x step);
 *   done_port=N  then serve (answer ARP and pings: the host pings us with all sizes) until a
 *                UDP datagram "DONE" arrives on port N (default 9000) or serve_secs pass
 *                (default 60); at least ping_expect pings must have been answered. Frames
 *                longer than MTU + 14 are counted: with VIRTIO_NET_F_MTU negotiated there
 *                must be none (the host script sends some with its side at MTU 9000).
 * burst=N: with udp_port, N datagrams sent while the guest reads nothing (more answers than
 * the receive queue holds), then answers must come again and a ping must work.
 * nics=N, nic=K: N NICs are there (all are started), the test runs on NIC K (0 first).
 * NIC options: see vnet_setup(). */
#include "net.h"

static struct vnet nic, others[VIRTIO_MAX_DEVS];
static struct netif nif;
static uint8_t pat[2048];

static uint32_t arg_ip(const char *key, const char *dflt)
{
    char s[20];
    uint32_t ip = 0;
    const char *v = arg_str(key, s, sizeof(s), dflt);
    if (!ip_parse(v, &ip))
        fail("%s=%s is not an IPv4 address", key, v);
    return ip;
}

static uint32_t next_size(uint32_t s, uint32_t step, uint32_t max)
{
    if (s < 16)
        return s + 1;
    if (s + step < max - 1)
        return s + step;
    return s + 1 < max ? max - 1 : s + 1; /* the largest two, then past the end */
}

static void pings(uint32_t peer, uint32_t max, uint32_t step)
{
    static uint8_t answered[8192];
    uint32_t ok = 0, wrong = 0, lost = 0, n = 0, first_bad = 0xffffffffu, slow = 0, worst = 0;
    uint16_t seq = 0;
    nif.answered = answered;
    for (uint32_t s = 0; s <= max; s = next_size(s, step, max), n++, seq++) {
        const uint8_t *data = pat + (seq & 255);
        uint64_t t0 = clock_us();
        int r = net_ping(&nif, peer, 0x6e62, seq, data, s, 1000000);
        uint32_t rtt = (uint32_t)(clock_us() - t0);
        if (r == 1) {
            worst = rtt > worst ? rtt : worst;
            slow += rtt > 100000;
        } else if (r == 0) {
            printf("ping %u bytes (seq %u): no answer within 1 s\n", s, seq);
        }
        if (r == 0) { /* one more try: the host may still have been resolving our address */
            seq++;
            r = net_ping(&nif, peer, 0x6e62, seq, pat + (seq & 255), s, 1000000);
        }
        ok += r == 1, wrong += r < 0, lost += r == 0;
        if (r != 1 && first_bad == 0xffffffffu)
            first_bad = s;
    }
    char bad[32] = "";
    if (first_bad != 0xffffffffu)
        snprintf(bad, sizeof(bad), ", first bad size %u", first_bad);
    nif.answered = NULL;
    check(
        ok == n,
        "ICMP: %u echo payload sizes 0..%u (frames %u..%u bytes) to the peer: %u intact, %u wrong, %u lost%s"
        " (%u late answers, %u repeated; slowest answer %u ms, %u over 100 ms)",
        n, max, ETH_HLEN + IP_HLEN + ICMP_HLEN, ETH_HLEN + IP_HLEN + ICMP_HLEN + max, ok, wrong, lost, bad,
        nif.stray_replies - nif.stray_dups, nif.stray_dups, worst / 1000, slow);
}

/* Each datagram from its own source port (6000 + its number), so that a late answer to an
 * earlier one (after its 1 s wait) is told apart: counted as late, not as wrong. */
static void udp_echo(uint32_t peer, uint16_t port, uint32_t max, uint32_t step)
{
    static uint8_t done[2000 / 8];
    uint32_t ok = 0, n = 0, first_bad = 0xffffffffu, nbad = 0, late = 0, dups = 0;
    for (uint32_t s = 0; s <= max; s = next_size(s, step, max), n++) {
        const uint8_t *data = pat + (n & 255);
        uint16_t sport = (uint16_t)(6000 + n % 2000);
        int got = 0;
        for (unsigned tries = 0; tries < 2 && !got; tries++) {
            net_send_udp(&nif, peer, sport, port, data, s);
            uint64_t start = clock_us();
            struct pkt p;
            while (!got && clock_us() - start < 1000000) {
                if (net_poll(&nif, &p, 20000) < 0)
                    break;
                if (!p.ip || p.proto != IPPROTO_UDP || p.saddr != peer || p.sport != port)
                    continue;
                if (p.dport != sport) {
                    if (p.dport >= 6000 && p.dport < 8000)
                        (done[(p.dport - 6000) / 8] & 1 << (p.dport - 6000) % 8) ? dups++ : late++;
                    continue;
                }
                done[(sport - 6000) / 8] |= (uint8_t)(1 << (sport - 6000) % 8);
                got = p.l4_ok && p.data_len == s + 5 && !memcmp(p.data, "echo:", 5) &&
                              !memcmp(p.data + 5, data, s)
                          ? 1
                          : -1;
                if (got < 0 && nbad < 5) { /* say what is wrong with the first few */
                    uint32_t at = 0;
                    while (at < s && at + 5 < p.data_len && p.data[at + 5] == data[at])
                        at++;
                    printf("UDP %u bytes: reply of %u bytes, checksum %s, first difference at byte %u (hdr "
                           "flags %x)\n",
                           s, p.data_len, p.l4_ok ? "good" : "BAD", at, nic.last_hdr.flags);
                }
            }
        }
        ok += got == 1;
        nbad += got != 1;
        if (got != 1 && first_bad == 0xffffffffu)
            first_bad = s;
    }
    char bad[32] = "";
    if (first_bad != 0xffffffffu)
        snprintf(bad, sizeof(bad), ", first bad size %u", first_bad);
    check(ok == n,
          "UDP: %u payload sizes 0..%u to the peer's echo server and back intact: %u%s (%u late answers, %u "
          "repeated)",
          n, max, ok, bad, late, dups);
}

/* More answers than the receive queue has buffers: burst datagrams go to the echo server
 * while the guest reads nothing, so the answers fill every posted buffer and the rest wait
 * in the host or are dropped. Then the guest reads (reposting buffers as it goes): answers
 * must arrive again, at least as many as fit in the queue, and once they stop, a ping must
 * work (while answers still pour in, the device may drop a frame each time the queue runs
 * dry, as a NIC does with a full ring: the ping's answer may be that frame).
 * No step has a fixed length (a busy host answers slowly): the queue is left alone until the
 * device has filled it, or filled nothing more for 2 s; the answers are read until none came
 * for 2 s; each ping (at most 3) waits 10 s. */
static void exhaust(uint32_t peer, uint16_t port, unsigned burst)
{
    static const uint8_t data[64] = { 1, 2, 3, 4 };
    unsigned sent = 0, got = 0;
    for (unsigned i = 0; i < burst; i++)
        sent += net_send_udp(&nif, peer, 5555, port, data, sizeof(data)) == 0;
    vnet_tx_drain(&nic, 1000000);
    unsigned room = nic.rxq->size; /* one buffer per small frame, with MRG_RXBUF or not */
    unsigned want = room < sent ? room : sent;
    uint16_t filled = 0;
    for (uint64_t last = clock_us(); clock_us() - last < 2000000;) {
        uint16_t f = (uint16_t)(nic.rxq->used->idx - nic.rxq->used_idx);
        if (f != filled)
            filled = f, last = clock_us();
        if (filled >= want)
            break;
        delay_us(10000);
    }
    struct pkt p;
    for (uint64_t last = clock_us(); clock_us() - last < 2000000;) {
        int r = net_poll(&nif, &p, 300000);
        if (r < 0)
            break;
        if (r > 0 && p.ip && p.proto == IPPROTO_UDP && p.sport == port && p.dport == 5555 &&
            p.data_len == sizeof(data) + 5)
            got++, last = clock_us();
    }
    unsigned tries = 0;
    bool works = false;
    while (!works && tries < 3)
        works = net_ping(&nif, peer, 0x6578, (uint16_t)++tries, data, sizeof(data), 10000000) == 1;
    check(got >= want && works,
          "rx queue overrun: %u datagrams sent while not reading (%u buffers filled meanwhile), %u answers "
          "received "
          "after (queue of %u), then a ping %s (try %u)",
          sent, filled, got, nic.rxq->size, works ? "works" : "FAILS", tries);
}

static void serve(uint16_t port)
{
    uint32_t secs = (uint32_t)arg_u64("serve_secs", 60), pings0 = nif.ping_answered, oversize = 0,
             longest = 0;
    uint32_t limit = nic.mtu + ETH_HLEN;
    bool done = false;
    printf("READY serve done_port=%u\n", port);
    uint64_t start = clock_us();
    struct pkt p;
    while (!done && clock_us() - start < secs * 1000000ull) {
        if (net_poll(&nif, &p, 100000) < 0)
            break;
        if (p.len > limit)
            oversize++, longest = p.len > longest ? p.len : longest;
        done = p.ip && p.proto == IPPROTO_UDP && p.l4_ok && p.daddr == nif.ip && p.dport == port &&
               p.data_len == 4 && !memcmp(p.data, "DONE", 4);
    }
    uint32_t answered = nif.ping_answered - pings0;
    printf("serving ended: %s; %u pings and %u ARP requests answered; %u frames longer than %u bytes "
           "(longest %u)\n",
           done ? "DONE received" : "timed out", answered, nif.arp_answered, oversize, limit, longest);
    check(done, "serving: the host ended it with DONE");
    check(answered >= arg_u64("ping_expect", 0),
          "serving: answered %u pings from the host (at least %u expected)", answered,
          (uint32_t)arg_u64("ping_expect", 0));
    /* The host may send frames longer than our MTU (jumbo=1: its side of the link has MTU
     * 9000). With VIRTIO_NET_F_MTU negotiated the device must not pass them (5.1.6.3.2);
     * without it, it may (in merged buffers), but never past a buffer's end (rx_bad). */
    if (virtio_has(&nic.v, VIRTIO_NET_F_MTU))
        check(oversize == 0, "frames longer than the MTU the device announced (%u) were dropped (%u arrived)",
              nic.mtu, oversize);
    else if (oversize)
        printf("note: %u frames longer than %u bytes arrived (the device announced no MTU)\n", oversize,
               limit);
}

void test_main(void)
{
    for (unsigned i = 0; i < sizeof(pat); i++)
        pat[i] = (uint8_t)(i * 31 + (i >> 8) + 1);
    /* nics=N: N NICs are expected, all are started, the test runs on number nic=K (the
     * others stay idle with their buffers posted); their MACs must differ. */
    unsigned nics = (unsigned)arg_u64("nics", 1), use = (unsigned)arg_u64("nic", 0);
    if (nics > 1 && nics <= VIRTIO_MAX_DEVS && use < nics) {
        for (unsigned i = 0; i < nics; i++)
            if (vnet_setup(i == use ? &nic : &others[i], i))
                return;
        bool distinct = true;
        for (unsigned i = 0; i < nics; i++)
            for (unsigned j = 0; j < i; j++)
                distinct &= memcmp(i == use ? nic.mac : others[i].mac, j == use ? nic.mac : others[j].mac,
                                   6) != 0;
        check(distinct, "%u NICs started, the test runs on NIC %u, MACs distinct", nics, use);
    } else if (vnet_setup(&nic, 0)) {
        return;
    }
    uint32_t ip = arg_ip("ip", "10.0.3.2"), peer = arg_ip("peer", "10.0.3.1");
    uint32_t prefix = (uint32_t)arg_u64("prefix", 24), mask = prefix ? ~0u << (32 - prefix) : 0;
    net_init(&nif, &nic, ip, mask, 0);
    uint32_t irq0 = irq_count[nic.v.vec_q];
    uint32_t mtu = nic.mtu, step = (uint32_t)arg_u64("step", 1);
    if (!step)
        step = 1;
    uint8_t mac[6];
    char a[16];
    bool ok = net_resolve(&nif, peer, mac, 5000000);
    check(ok, "ARP: peer %s is at %02x:%02x:%02x:%02x:%02x:%02x", ip_str(peer, a), mac[0], mac[1], mac[2],
          mac[3], mac[4], mac[5]);
    if (!ok)
        return;
    pings(peer, mtu - IP_HLEN - ICMP_HLEN, step);
    uint16_t uport = (uint16_t)arg_u64("udp_port", 0);
    if (uport)
        udp_echo(peer, uport, mtu - IP_HLEN - UDP_HLEN - 5, (uint32_t)arg_u64("udp_step", 4 * step));
    if (uport && arg_u64("burst", 0))
        exhaust(peer, uport, (unsigned)arg_u64("burst", 0));
    serve((uint16_t)arg_u64("done_port", 9000));
    if (nic.v.msix_n >= 2) {
        unsigned n = net_irq_probe(&nif, peer, 4);
        check(n > 0, "4 pings to the peer answered, their replies raise MSI-X interrupts (%u; %u in all)", n,
              irq_count[nic.v.vec_q] - irq0);
    }
    check(nic.rx_bad == 0 && nif.bad_frames == 0, "the device's rx entries were well formed (%u bad%s%s)",
          nic.rx_bad, nic.bad_why ? ": " : "", nic.bad_why ? nic.bad_why : "");
    printf("frames: rx %u (%u merged from several buffers, %u with a partial checksum) tx %u%s, %u send "
           "errors\n",
           nic.rx_frames, nic.rx_merged, nif.rx_partial, nic.tx_frames,
           nif.offload_tx_csum ? " (UDP checksums by the device)" : "", nif.send_errors);
}
